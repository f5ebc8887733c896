"""Forms for the vault pages. They only parse input; the domain modules (`vaults.services.*`,
`vaults.protection`, `jobs.restore`) decide and save."""

from typing import Any, cast

from django import forms
from django.contrib.auth.models import User
from django.db.models import QuerySet

from inventory.models import Host, VirtualMachine
from jobs.models import RestoreKind, RestoreTier
from policies.models import BackupPolicy
from vaults.models import (
    CredentialsSource,
    Encryption,
    Immutability,
    RecoveryPoint,
    Replication,
    Role,
    SoftDeleteState,
    StopMode,
    StorageTarget,
    TargetKind,
    Vault,
    lun_label,
    vault_name_validator,
)
from vaults.services.targets import TARGET_FIELDS
from vaults.services.vaults import VaultChanges, VaultSettings


class VaultSettingsForm(forms.Form):
    soft_delete_state = forms.ChoiceField(choices=SoftDeleteState.choices)
    soft_delete_days = forms.IntegerField(
        min_value=14, max_value=180, help_text="How long deleted backup data is kept: 14–180."
    )
    immutability = forms.ChoiceField(
        choices=Immutability.choices, help_text="Locked immutability cannot be undone."
    )
    mua_enabled = forms.BooleanField(
        required=False,
        label="Multi-user authorization",
        help_text="Critical operations need a guard approver's approval.",
    )

    drill_every_days = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=365,
        initial=0,
        label="Restore drill every (days)",
        help_text="Each item's latest recovery point is drilled this often; 0: no schedule.",
    )

    FIELDS = (
        "soft_delete_state",
        "soft_delete_days",
        "immutability",
        "mua_enabled",
        "drill_every_days",
    )

    def clean_drill_every_days(self) -> int:
        return self.cleaned_data.get("drill_every_days") or 0

    @classmethod
    def initial_for(cls, vault: Vault) -> dict[str, Any]:
        return {f: getattr(vault, f) for f in cls.FIELDS}

    def changes(self, vault: Vault) -> VaultChanges:
        changed = {
            f: self.cleaned_data[f]
            for f in self.FIELDS
            if self.cleaned_data[f] != getattr(vault, f)
        }
        return cast(VaultChanges, changed)


class VaultCreateForm(VaultSettingsForm):
    name = forms.CharField(
        max_length=50,
        validators=[vault_name_validator],
        help_text="2–50 characters: a letter first, then letters, digits or hyphens.",
    )
    store_location = forms.CharField(
        required=False,
        max_length=500,
        help_text="Directory of the vault store, s3://bucket/prefix or az://container/prefix; "
        "empty for the default location.",
    )
    storage_target = forms.ModelChoiceField(
        queryset=StorageTarget.objects.order_by("name"),
        required=False,
        to_field_name="name",
        help_text="For s3:// and az:// locations: the storage target holding them.",
    )
    secondary_location = forms.CharField(
        required=False,
        max_length=500,
        label="Secondary location",
        help_text="A second copy of every recovery point (another region or disk): a "
        "directory, s3:// or az:// location; empty for none.",
    )
    secondary_target = forms.ModelChoiceField(
        queryset=StorageTarget.objects.order_by("name"),
        required=False,
        to_field_name="name",
        label="Secondary storage target",
    )
    immutability = forms.ChoiceField(
        choices=[
            (Immutability.DISABLED, Immutability.DISABLED.label),
            (Immutability.UNLOCKED, Immutability.UNLOCKED.label),
        ]
    )

    PLACES = ("store_location", "storage_target", "secondary_location", "secondary_target")
    field_order = ["name", *PLACES]

    def settings(self) -> VaultSettings:
        chosen = {f: self.cleaned_data[f] for f in (*self.FIELDS, *self.PLACES)}
        return cast(VaultSettings, chosen)


def _user_by_name(username: str) -> User:
    try:
        return User.objects.get(username=username, is_active=True)
    except User.DoesNotExist:
        raise forms.ValidationError(f"No active user named {username}.") from None


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.READER)

    def clean_username(self) -> User:
        return _user_by_name(self.cleaned_data["username"].strip())


class GuardForm(forms.Form):
    username = forms.CharField(max_length=150, label="Guard approver")

    def clean_username(self) -> User:
        return _user_by_name(self.cleaned_data["username"].strip())


class HostLinkForm(forms.Form):
    host = forms.ModelChoiceField(queryset=Host.objects.none(), empty_label=None)

    def __init__(self, *args: Any, hosts: QuerySet[Host], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["host"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = hosts


def _choose_from(field: forms.Field, rows: QuerySet[Any]) -> None:
    assert isinstance(field, forms.ModelChoiceField)
    field.queryset = rows


def parse_luns(text: str) -> list[int]:
    luns = []
    for token in text.replace(",", " ").split():
        try:
            luns.append(int(token))
        except ValueError:
            raise forms.ValidationError(f"{token!r} is not a LUN number.") from None
    return sorted(set(luns))


class ProtectForm(forms.Form):
    SELECTION = [
        ("all", "Every disk"),
        ("include", "Only these data disks"),
        ("exclude", "Every disk except these data disks"),
    ]

    vm = forms.ModelChoiceField(
        queryset=VirtualMachine.objects.none(), label="Virtual machine", to_field_name="name"
    )
    policy = forms.ModelChoiceField(
        queryset=BackupPolicy.objects.none(), to_field_name="name", empty_label=None
    )
    disk_selection = forms.ChoiceField(
        choices=SELECTION,
        initial="all",
        widget=forms.RadioSelect,
        help_text="Selective disk backup needs an enhanced policy; the OS disk is always included.",
    )
    luns = forms.CharField(
        required=False, label="Data-disk LUNs", help_text="Comma- or space-separated, e.g. 0, 2"
    )

    def __init__(
        self,
        *args: Any,
        vms: QuerySet[VirtualMachine],
        policies: QuerySet[BackupPolicy],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        _choose_from(self.fields["vm"], vms)
        _choose_from(self.fields["policy"], policies)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        selection = data.get("disk_selection")
        data["included_luns"] = data["excluded_luns"] = None
        if selection in ("include", "exclude"):
            try:
                luns = parse_luns(data.get("luns", ""))
            except forms.ValidationError as exc:
                self.add_error("luns", exc)
                return data
            if not luns:
                self.add_error("luns", "Name at least one data-disk LUN.")
                return data
            data["included_luns" if selection == "include" else "excluded_luns"] = luns
        return data


class BackupNowForm(forms.Form):
    retain_until = forms.DateField(
        required=False,
        label="Retain until",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The on-demand recovery point is kept through this day (default: 30 days).",
    )


class RestoreForm(forms.Form):
    """Parses the restore page; `jobs.restore.request_restore` checks everything else."""

    kind = forms.ChoiceField(
        choices=RestoreKind.choices, widget=forms.RadioSelect, label="Restore type"
    )
    luns = forms.TypedMultipleChoiceField(
        coerce=int, widget=forms.CheckboxSelectMultiple, label="Disks"
    )
    tier = forms.ChoiceField(
        choices=[c for c in RestoreTier.choices if c[0] != RestoreTier.SECONDARY],
        initial=RestoreTier.AUTO,
        label="Restore from",
    )
    source = forms.ChoiceField(
        choices=[("primary", "This vault's stores"), ("secondary", "The secondary copy")],
        initial="primary",
        required=False,
        label="Copy",
        help_text="The secondary copy answers while the vault's own stores are unreachable.",
    )
    host = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Target host")
    path = forms.CharField(required=False, max_length=500, label="Target directory")
    name = forms.CharField(required=False, max_length=63, label="New VM name")
    format = forms.ChoiceField(
        choices=[("", "Host default"), ("qcow2", "qcow2"), ("raw", "raw")],
        required=False,
        label="Disk format",
        help_text="libvirt hosts: qcow2 (default) keeps changed-block tracking; image hosts: raw.",
    )
    confirm_name = forms.CharField(
        required=False,
        max_length=63,
        label="Type the VM's name to confirm",
        help_text="Replace disks overwrites the VM's own disks.",
    )
    start = forms.BooleanField(
        required=False,
        label="Start the new VM",
        help_text="Only for “Create new VM” on a "
        "libvirt host: the domain is started once its disks are restored.",
    )

    def __init__(
        self, *args: Any, rp: RecoveryPoint, hosts: list[Host], selective: bool, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        sizes = {d["lun"]: d.get("size", 0) for d in rp.disks}
        luns, host, kind = self.fields["luns"], self.fields["host"], self.fields["kind"]
        assert isinstance(luns, forms.ChoiceField) and isinstance(host, forms.ChoiceField)
        assert isinstance(kind, forms.ChoiceField)
        luns.choices = [(lun, lun_label(lun)) for lun in sorted(sizes)]
        luns.initial = sorted(sizes)
        host.choices = [("", "—")] + [(h.pk, h.name) for h in hosts]
        if selective:
            kind.choices = RestoreKind.choices[:1]
        kind.initial = RestoreKind.RESTORE_DISKS
        if rp.replication != Replication.REPLICATED:
            del self.fields["source"]  # only replicated recovery points have a second copy
        roots = "; ".join(f"{h.name}: {', '.join(h.allowed_roots)}" for h in hosts)
        self.fields["path"].help_text = (
            f"An existing directory inside the host's allowed roots ({roots})."
            if roots
            else "No host is linked to this vault."
        )
        self.fields["name"].help_text = "Only for “Create new VM”: registered on the target host."
        self.vm_name = rp.protected_item.vm.name
        self.fields["confirm_name"].widget.attrs.update(autocomplete="off", spellcheck="false")
        self.fields["path"].widget.attrs["list"] = "allowed-roots"

    def clean(self) -> dict[str, Any]:
        """What the form alone can tell, every field at once: a target for restores that
        write new files, a name for a new VM, and the VM's name typed to replace its disks
        (so nobody overwrites a VM's disks by a stray click). The rest is checked by
        `request_restore`."""
        data = super().clean() or {}
        kind = data.get("kind")
        if kind in (RestoreKind.RESTORE_DISKS, RestoreKind.CREATE_VM):
            if not data.get("host"):
                self.add_error("host", "Choose the host to restore to.")
            if not (data.get("path") or "").strip():
                self.add_error("path", "Give a directory inside the host's allowed roots.")
        if kind == RestoreKind.CREATE_VM and not (data.get("name") or "").strip():
            self.add_error("name", "Give the new VM a name.")
        if kind == RestoreKind.REPLACE_DISKS and data.get("confirm_name") != self.vm_name:
            self.add_error(
                "confirm_name",
                f"Type the VM's name, {self.vm_name}, to replace its disks.",
            )
        return data

    def request_args(self) -> dict[str, Any]:
        data = self.cleaned_data
        target: dict[str, Any] | None = None
        if data["kind"] != "replace_disks":
            target = {"host": data["host"], "path": data["path"]}
            if data.get("format"):
                target["format"] = data["format"]
            if data["kind"] == "create_vm":
                target["name"] = data["name"]
                if data.get("start"):
                    target["start"] = True
        return {
            "kind": data["kind"],
            "luns": data["luns"],
            "tier": data["tier"],
            "target": target,
            "source": data.get("source") or "primary",
        }


# -- protection lifecycle -------------------------------------------------------------------------

STOP_MODE_HELP: dict[str, str] = {
    StopMode.RETAIN_FOREVER: "Backups stop; every recovery point is kept until you resume "
    "protection or delete the data.",
    StopMode.RETAIN_AS_PER_POLICY: "Backups stop; recovery points expire as the policy says, "
    "but the latest one is kept forever.",
    StopMode.DELETE_DATA: "Backups stop and the item with all its recovery points goes to the "
    "recycle bin for the vault's soft-delete days (deleted at once when soft delete is "
    "disabled).",
}


class StopProtectionForm(forms.Form):
    """Every mode parses; `vaults.protection.stop_protection` decides which the vault allows
    (the page only offers `stop_modes(vault)`)."""

    mode = forms.ChoiceField(choices=StopMode.choices, widget=forms.RadioSelect)


class PolicyChoiceForm(forms.Form):
    policy = forms.ModelChoiceField(
        queryset=BackupPolicy.objects.none(), to_field_name="name", empty_label=None
    )

    def __init__(
        self, *args: Any, policies: QuerySet[BackupPolicy], required: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["policy"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = policies
        field.required = required
        if not required:
            field.empty_label = "Keep the current policy"


class EncryptionForm(forms.Form):
    encryption = forms.ChoiceField(choices=Encryption.choices, widget=forms.RadioSelect)
    encryption_key = forms.ChoiceField(
        required=False, label="Customer-managed key", choices=[], help_text=""
    )

    def __init__(self, *args: Any, key_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key = self.fields["encryption_key"]
        assert isinstance(key, forms.ChoiceField)
        key.choices = [("", "—")] + [(n, n) for n in key_names]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("encryption") == Encryption.CUSTOMER_MANAGED and not data.get("encryption_key"):
            self.add_error("encryption_key", "Choose one of the registered keys.")
        return data


# -- storage targets (site administrators) ---------------------------------------------------------


class StorageTargetForm(forms.Form):
    """Parses the storage-target page; `vaults.services.targets` checks and saves."""

    name = forms.CharField(max_length=50)
    kind = forms.ChoiceField(choices=TargetKind.choices, initial=TargetKind.S3)
    endpoint = forms.CharField(
        max_length=300,
        required=False,
        help_text="http(s)://host[:port]; empty for AWS S3 (Azure: the account's blob URL).",
    )
    region = forms.CharField(max_length=64, required=False, help_text="e.g. eu-west-1.")
    path_style = forms.BooleanField(
        required=False, label="Path-style addressing", help_text="S3 only (MinIO, Ceph)."
    )
    credentials_source = forms.ChoiceField(
        choices=CredentialsSource.choices, initial=CredentialsSource.ENV, label="Credentials"
    )
    credentials_env = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Environment variables",
        help_text="One “key=VARIABLE” per line, the NAMES the workers read (S3: "
        "access_key_id, secret_access_key[, session_token]; Azure: account_name and "
        "account_key, or sas_token). Never the secrets.",
    )
    credentials_file = forms.CharField(
        max_length=500,
        required=False,
        label="Credentials file",
        help_text="An absolute path, readable by the workers, to a JSON object of those keys.",
    )
    object_lock = forms.BooleanField(
        required=False,
        label="S3 Object Lock",
        help_text="The bucket has Object Lock on: vaults with locked immutability get "
        "COMPLIANCE retention on their objects.",
    )

    @staticmethod
    def initial_from(target: StorageTarget) -> dict[str, Any]:
        return {
            **{f: getattr(target, f) for f in TARGET_FIELDS},
            "credentials_env": "\n".join(f"{k}={v}" for k, v in target.credentials_env.items()),
        }

    def clean_credentials_env(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for line in (self.cleaned_data["credentials_env"] or "").splitlines():
            if not line.strip():
                continue
            key, sep, var = line.partition("=")
            if not sep:
                raise forms.ValidationError(f"Write “key=VARIABLE”, not {line.strip()!r}.")
            names[key.strip()] = var.strip()
        return names


class TargetTestForm(forms.Form):
    location = forms.CharField(
        max_length=500,
        required=False,
        help_text="s3://bucket/prefix or az://container/prefix; empty: a vault's store in it.",
    )


class VaultAttachForm(forms.Form):
    name = forms.CharField(
        max_length=50,
        validators=[vault_name_validator],
        help_text="The vault's name, as it was (or a new one).",
    )
    location = forms.CharField(
        max_length=500,
        help_text="The vault store's directory, e.g. /srv/lifeboat/vaults/prod, or its "
        "s3://bucket/prefix or az://container/prefix.",
    )
    storage_target = forms.ModelChoiceField(
        queryset=StorageTarget.objects.order_by("name"),
        required=False,
        to_field_name="name",
        help_text="For s3:// and az:// locations: the registered storage target that reaches "
        "it (register it first under Storage targets).",
    )
