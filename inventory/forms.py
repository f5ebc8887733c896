"""Host and VM registration forms (site administrators only).

They only parse what was typed (one root or parameter per line, disks as “LUN path” lines);
`inventory.services` checks the paths against the host's allowed roots, reads disk sizes from
the files, saves and audits.
"""

from typing import Any

from django import forms
from django.forms.models import fields_for_model, model_to_dict

from inventory.models import Connector, Host, VirtualMachine
from inventory.services import VM_FIELDS


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class HostForm(forms.Form):
    name = forms.CharField(max_length=63)
    connector = forms.ChoiceField(
        choices=Connector.choices, initial=Connector.IMAGE, required=False
    )
    libvirt_uri = forms.CharField(
        max_length=500,
        required=False,
        label="libvirt URI",
        help_text="libvirt hosts only: qemu:///system, qemu+ssh://user@host/system or "
        "qemu+tls://host/system.",
    )
    snapshot_root = forms.CharField(
        max_length=500, help_text="Absolute directory for this host's snapshot tier."
    )
    allowed_roots = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One absolute directory per line: disk paths and restore targets must be "
        "inside one of them.",
    )
    dedicated_worker = forms.BooleanField(
        required=False,
        label="Dedicated worker",
        help_text="Jobs for this host run only on the worker started with "
        "`manage.py worker --host <name>` on the host.",
    )

    @staticmethod
    def initial_from(host: Host) -> dict[str, Any]:
        return {
            "name": host.name,
            "connector": host.connector,
            "libvirt_uri": host.libvirt_uri,
            "snapshot_root": host.snapshot_root,
            "allowed_roots": "\n".join(host.allowed_roots or []),
            "dedicated_worker": host.dedicated_worker,
        }

    def clean_connector(self) -> str:
        return self.cleaned_data["connector"] or Connector.IMAGE

    def clean_allowed_roots(self) -> list[str]:
        return _lines(self.cleaned_data["allowed_roots"])


class VMForm(forms.Form):
    """The VM's own fields come from the model; disks and script parameters are typed as lines."""

    LINE_FIELDS = ("pre_script_params", "post_script_params")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields = fields_for_model(VirtualMachine, fields=["host", *VM_FIELDS])
        for name in self.LINE_FIELDS:
            fields[name] = forms.CharField(
                required=False,
                help_text="One parameter per line.",
                widget=forms.Textarea(attrs={"rows": 2}),
            )
        fields["disks"] = forms.CharField(
            widget=forms.Textarea(attrs={"rows": 4}),
            help_text="One disk per line as “LUN path”: LUN -1 is the OS disk, data disks "
            "count from 0. Paths must exist inside the host's allowed roots.",
        )
        self.fields.update(fields)

    @classmethod
    def initial_from(cls, vm: VirtualMachine) -> dict[str, Any]:
        initial = model_to_dict(vm, fields=["host", *VM_FIELDS])
        for name in cls.LINE_FIELDS:
            initial[name] = "\n".join(getattr(vm, name) or [])
        initial["disks"] = "\n".join(f"{d.lun} {d.path}" for d in vm.disks.all())
        return initial

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in self.LINE_FIELDS:
            if name in data:
                data[name] = _lines(data[name])
        return data

    def clean_disks(self) -> list[dict[str, Any]]:
        disks, problems = [], []
        for line in _lines(self.cleaned_data["disks"]):
            lun_text, _, path = line.partition(" ")
            try:
                lun = int(lun_text)
            except ValueError:
                problems.append(f"“{line}”: start with the LUN number.")
                continue
            if not path.strip():
                problems.append(f"LUN {lun}: give the disk's path.")
                continue
            disks.append({"lun": lun, "path": path.strip()})
        if problems:
            raise forms.ValidationError(problems)
        return disks

    def vm_fields(self) -> dict:
        return {f: self.cleaned_data[f] for f in VM_FIELDS}
