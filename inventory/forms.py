"""Host and VM registration forms (site administrators only).

They name files on this server, so every disk path must resolve inside the host's allowed
roots and exist; a disk's size is read from the file, never typed in.
"""

import os
import stat

from django import forms

from inventory.models import Disk, Host, VirtualMachine


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class HostForm(forms.ModelForm):
    allowed_roots = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One absolute directory per line: disk paths and restore targets must be "
        "inside one of them.",
    )

    class Meta:
        model = Host
        fields = ["name", "snapshot_root", "allowed_roots"]
        help_texts = {"snapshot_root": "Absolute directory for this host's snapshot tier."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allowed_roots"] = "\n".join(self.instance.allowed_roots or [])

    def clean_allowed_roots(self):
        roots = _lines(self.cleaned_data["allowed_roots"])
        relative = [r for r in roots if not os.path.isabs(r)]
        if relative:
            raise forms.ValidationError(f"Not an absolute path: {', '.join(relative)}")
        return roots


class VMForm(forms.ModelForm):
    disks = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One disk per line as “LUN path”: LUN -1 is the OS disk, data disks count "
        "from 0. Paths must exist inside the host's allowed roots.",
    )
    pre_script_params = forms.CharField(
        required=False,
        help_text="One parameter per line.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    post_script_params = forms.CharField(
        required=False,
        help_text="One parameter per line.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    class Meta:
        model = VirtualMachine
        fields = [
            "name",
            "host",
            "os_type",
            "power_state",
            "power_probe_command",
            "pre_script",
            "pre_script_params",
            "post_script",
            "post_script_params",
            "script_timeout",
            "script_retries",
            "continue_on_failure",
            "freeze_enabled",
            "freeze_command",
            "thaw_command",
            "freeze_timeout",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        vm = self.instance
        if vm.pk:
            self.initial["disks"] = "\n".join(f"{d.lun} {d.path}" for d in vm.disks.all())
            self.initial["pre_script_params"] = "\n".join(vm.pre_script_params or [])
            self.initial["post_script_params"] = "\n".join(vm.post_script_params or [])
            # Moving a VM to another host would orphan its snapshot tier.
            self.fields["host"].disabled = True

    def clean_pre_script_params(self):
        return _lines(self.cleaned_data["pre_script_params"])

    def clean_post_script_params(self):
        return _lines(self.cleaned_data["post_script_params"])

    def clean_disks(self):
        disks: dict[int, str] = {}
        for line in _lines(self.cleaned_data["disks"]):
            lun_text, _, path = line.partition(" ")
            path = path.strip()
            try:
                lun = int(lun_text)
            except ValueError:
                raise forms.ValidationError(f"“{line}”: start with the LUN number.") from None
            if not -1 <= lun <= 63:
                raise forms.ValidationError(f"LUN {lun}: use -1 (OS disk) to 63.")
            if lun in disks:
                raise forms.ValidationError(f"LUN {lun} is given twice.")
            if not path:
                raise forms.ValidationError(f"LUN {lun}: give the disk's path.")
            disks[lun] = path
        if Disk.OS_LUN not in disks:
            raise forms.ValidationError("Give the OS disk as LUN -1.")
        return disks

    def clean(self):
        data = super().clean()
        host = data.get("host") or (self.instance.host if self.instance.pk else None)
        disks = data.get("disks")
        if host is not None:
            for field in ("pre_script", "post_script"):
                path = data.get(field)
                if path and not (os.path.isabs(path) and host.allows(path)):
                    self.add_error(
                        field, f"Must be an absolute path inside host {host.name}'s allowed roots."
                    )
        if host is not None and disks:
            sizes = {}
            for lun, path in disks.items():
                problem = self._disk_problem(host, path)
                if problem:
                    self.add_error("disks", f"LUN {lun}: {problem}")
                else:
                    sizes[lun] = Disk(path=path).read_size()
            data["disk_sizes"] = sizes
        return data

    @staticmethod
    def _disk_problem(host: Host, path: str) -> str | None:
        if not os.path.isabs(path):
            return f"{path} is not an absolute path."
        if not host.allows(path):
            return f"{path} is outside host {host.name}'s allowed roots."
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return f"{path} does not exist."
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            return f"{path} is neither a file nor a block device."
        if not os.access(path, os.R_OK):
            return f"{path} is not readable."
        return None

    def save_disks(self, vm: VirtualMachine) -> None:
        """Make the VM's disks match the form: update by LUN, add new ones, drop the rest."""
        disks = self.cleaned_data["disks"]
        sizes = self.cleaned_data["disk_sizes"]
        vm.disks.exclude(lun__in=list(disks)).delete()
        for lun, path in disks.items():
            Disk.objects.update_or_create(
                vm=vm, lun=lun, defaults={"path": path, "size": sizes[lun]}
            )
