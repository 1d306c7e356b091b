"""Portal forms: they parse and check input; the services decide."""

import base64

from django import forms
from django.template.defaultfilters import filesizeformat

from apps.images.models import ImageStatus
from apps.images.selectors import image_list
from apps.instances.selectors import flavor_list, keypair_list
from apps.networks.selectors import network_list
from cloudmgr.models import INT_MAX

_INPUT = {"class": "form-control"}
_MONO = {"class": "form-control font-monospace"}


class FlavorChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, flavor):
        extra = (f", {flavor.ephemeral} GB ephemeral" if flavor.ephemeral else "") + (
            f", {flavor.swap} MiB swap" if flavor.swap else "")
        return f"{flavor.name} ({flavor.vcpus} vCPU, {flavor.ram} MiB RAM, {flavor.disk} GB disk{extra})"


class ImageChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, image):
        size = f", {filesizeformat(image.size)}" if image.size else ""
        return f"{image.name or image.id} ({image.disk_format}{size})"


class InstanceLaunchForm(forms.Form):
    """Launch one or more instances. The choices are what the selectors let this user see, so a
    foreign image, a private flavor or another user's key pair cannot be posted."""

    name = forms.CharField(
        max_length=255, strip=True,
        widget=forms.TextInput(attrs={**_INPUT, "autofocus": True, "autocomplete": "off"}),
    )
    description = forms.CharField(
        required=False, max_length=255, strip=True, widget=forms.TextInput(attrs={**_INPUT, "autocomplete": "off"}),
    )
    image = ImageChoiceField(
        queryset=None, empty_label="Choose an image", widget=forms.Select(attrs={"class": "form-select"})
    )
    flavor = FlavorChoiceField(
        queryset=None, empty_label="Choose a flavor", widget=forms.Select(attrs={"class": "form-select"})
    )
    key_name = forms.ChoiceField(
        required=False, label="Key pair", widget=forms.Select(attrs={"class": "form-select"}),
        help_text="Your key pairs: create or import one on the Key pairs page.",
    )
    network = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Automatic (the project's only network)",
        widget=forms.Select(attrs={"class": "form-select"}),
        help_text="Where the instance gets its port and address.",
    )
    count = forms.IntegerField(
        required=False, min_value=1, max_value=20, initial=1, widget=forms.NumberInput(attrs=_INPUT),
        help_text="More than one: the instances are named NAME-1, NAME-2, ...",
    )
    # Nova takes at most 65535 bytes of base64, about 49152 bytes of script (the service counts).
    user_data = forms.CharField(
        required=False, label="User data", max_length=49152, strip=False,
        widget=forms.Textarea(attrs={**_MONO, "rows": 4, "spellcheck": "false"}),
        help_text="A cloud-init script or cloud-config (sent to the guest as typed, with Unix line ends).",
    )
    config_drive = forms.BooleanField(
        required=False, label="Config drive", widget=forms.CheckboxInput(attrs={"class": "form-check-input"}),
        help_text="Also give the guest its metadata and user data on a read-only disk (config-2), even "
                  "where its network serves them.",
    )

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].queryset = image_list(user=user, project=project).filter(status=ImageStatus.ACTIVE)
        self.fields["flavor"].queryset = flavor_list(user=user, project=project)
        # Instances attach to tenant networks, not to the external one (floating IPs reach them).
        self.fields["network"].queryset = network_list(user=user, project=project).filter(external=False)
        self.fields["key_name"].choices = [("", "No key pair")] + [
            (k.name, k.name) for k in keypair_list(user=user)
        ]

    def clean_user_data(self):
        """The API's form of user data: base64 of the bytes. Browsers send a textarea's lines
        with CRLF, which would break a script in the guest (`/bin/sh\\r: not found`): LF, as
        typed."""
        data = (self.cleaned_data.get("user_data") or "").replace("\r\n", "\n")
        return base64.b64encode(data.encode()).decode() if data.strip() else ""

    def clean_count(self):
        return self.cleaned_data.get("count") or 1


class InstanceSnapshotForm(forms.Form):
    """An image of the instance's root disk (createImage)."""

    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={**_INPUT, "autocomplete": "off"}))


class InstanceBackupForm(InstanceSnapshotForm):
    """A backup image (createBackup): the newest ``rotation`` backups of its type stay."""

    backup_type = forms.CharField(max_length=255, initial="daily", label="Type",
                                  widget=forms.TextInput(attrs={**_INPUT, "autocomplete": "off"}))
    rotation = forms.IntegerField(min_value=0, initial=1, label="Keep", widget=forms.NumberInput(attrs=_INPUT))


class InstancePasswordForm(forms.Form):
    """A new password for the guest's admin user (changePassword), typed twice."""

    password = forms.CharField(max_length=255, strip=False, label="New password",
                               widget=forms.PasswordInput(attrs={**_INPUT, "autocomplete": "new-password"}))
    confirm = forms.CharField(max_length=255, strip=False, label="Again",
                              widget=forms.PasswordInput(attrs={**_INPUT, "autocomplete": "new-password"}))

    def clean(self):
        data = super().clean()
        if data.get("password") is not None and data.get("password") != data.get("confirm"):
            raise forms.ValidationError("The two passwords differ.")
        return data


class UsagePeriodForm(forms.Form):
    """The usage page's period: whole days in UTC, both included."""

    start = forms.DateField(widget=forms.DateInput(attrs={**_INPUT, "type": "date"}))
    end = forms.DateField(widget=forms.DateInput(attrs={**_INPUT, "type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("The start cannot come after the end.")
        return data


class KeypairCreateForm(forms.Form):
    """A new key pair, generated by the cloud: its private key is shown once."""

    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={**_INPUT, "autocomplete": "off"}))


class KeypairImportForm(forms.Form):
    """An existing public key (the private key stays with its owner). It shares the page, and
    the field names, with the create form, so its ids differ."""

    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={**_INPUT, "autocomplete": "off"}))
    public_key = forms.CharField(
        label="Public key", widget=forms.Textarea(attrs={**_MONO, "rows": 4, "spellcheck": "false"}),
        help_text="One line as in ~/.ssh/id_ed25519.pub: ssh-ed25519, ssh-rsa or ecdsa-sha2-*.",
    )

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_import_%s")
        super().__init__(*args, **kwargs)


class FlavorForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs=_INPUT))
    vcpus = forms.IntegerField(min_value=1, max_value=INT_MAX, label="vCPUs",
                               widget=forms.NumberInput(attrs=_INPUT))
    ram = forms.IntegerField(min_value=1, max_value=INT_MAX, label="RAM (MiB)",
                             widget=forms.NumberInput(attrs=_INPUT))
    disk = forms.IntegerField(min_value=0, max_value=INT_MAX, label="Root disk (GB)",
                              widget=forms.NumberInput(attrs=_INPUT))
    ephemeral = forms.IntegerField(min_value=0, max_value=INT_MAX, initial=0, label="Ephemeral disk (GB)",
                                   help_text="A second disk, ext4, labelled ephemeral0; 0 for none.",
                                   widget=forms.NumberInput(attrs=_INPUT))
    swap = forms.IntegerField(min_value=0, max_value=INT_MAX, initial=0, label="Swap (MiB)",
                              help_text="A swap disk after it; 0 for none.", widget=forms.NumberInput(attrs=_INPUT))
    is_public = forms.BooleanField(required=False, initial=True, label="Public",
                                   widget=forms.CheckboxInput(attrs={"class": "form-check-input"}))
