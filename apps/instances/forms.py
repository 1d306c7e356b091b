"""Portal forms: they parse and check input; the services decide."""

from django import forms
from django.template.defaultfilters import filesizeformat

from apps.images.models import ImageStatus
from apps.images.selectors import image_list
from apps.instances.selectors import flavor_list


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

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].queryset = image_list(user=user, project=project).filter(status=ImageStatus.ACTIVE)
        self.fields["flavor"].queryset = flavor_list(user=user)
