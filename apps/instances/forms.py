"""Portal forms: they parse and check input; the services decide."""

from django import forms
from django.template.defaultfilters import filesizeformat

from apps.images.models import ImageStatus
from apps.images.selectors import image_list
from apps.instances.selectors import flavor_list, keypair_list


class FlavorChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, flavor):
        return f"{flavor.name} ({flavor.vcpus} vCPU, {flavor.ram} MiB RAM, {flavor.disk} GB disk)"


class ImageChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, image):
        size = f", {filesizeformat(image.size)}" if image.size else ""
        return f"{image.name or image.id} ({image.disk_format}{size})"


class InstanceLaunchForm(forms.Form):
    """Launch one instance. The choices are what the selectors let this user see, so a foreign
    image or a private flavor cannot be posted."""

    name = forms.CharField(
        max_length=255, strip=True,
        widget=forms.TextInput(attrs={"class": "form-control", "autofocus": True, "autocomplete": "off"}),
    )
    image = ImageChoiceField(
        queryset=None, empty_label="Choose an image", widget=forms.Select(attrs={"class": "form-select"})
    )
    flavor = FlavorChoiceField(
        queryset=None, empty_label="Choose a flavor", widget=forms.Select(attrs={"class": "form-select"})
    )

    key_name = forms.ChoiceField(
        required=False, label="Key pair", widget=forms.Select(attrs={"class": "form-select"}),
    )
    user_data = forms.CharField(
        required=False, label="User data", max_length=49152,
        widget=forms.Textarea(attrs={"class": "form-control font-monospace", "rows": 4}),
        help_text="A cloud-init script or cloud-config (sent to the guest as is).",
    )
    count = forms.IntegerField(
        required=False, min_value=1, max_value=20, initial=1, widget=forms.NumberInput(attrs={"class": "form-control"}),
        help_text="More than one: the instances are named NAME-1, NAME-2, ...",
    )

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].queryset = image_list(user=user, project=project).filter(status=ImageStatus.ACTIVE)
        self.fields["flavor"].queryset = flavor_list(user=user, project=project)
        self.fields["key_name"].choices = [("", "No key pair")] + [
            (k.name, k.name) for k in keypair_list(user=user)
        ]

    def clean_user_data(self):
        import base64

        data = self.cleaned_data.get("user_data") or ""
        return base64.b64encode(data.encode()).decode() if data else ""

    def clean_count(self):
        return self.cleaned_data.get("count") or 1
