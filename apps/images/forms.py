"""Portal forms for images: they parse and check input; the services decide."""

from django import forms

from apps.images.models import DiskFormat, Image, Visibility
from apps.images.services import PatchOp

_TEXT = {"class": "form-control", "autocomplete": "off"}
_SELECT = {"class": "form-select"}


def _visibility_choices(*, is_admin: bool):
    allowed = [Visibility.PRIVATE, Visibility.SHARED, Visibility.COMMUNITY] + ([Visibility.PUBLIC] if is_admin else [])
    labels = {
        Visibility.PRIVATE: "Private: this project only",
        Visibility.SHARED: "Shared: this project and the projects you share it with",
        Visibility.COMMUNITY: "Community: anyone may use it by id (not listed by default)",
        Visibility.PUBLIC: "Public: every project",
    }
    return [(v.value, labels[v]) for v in allowed]


class ImageCreateForm(forms.Form):
    SOURCES = [("file", "Upload a file from this computer"), ("url", "Import from a URL")]

    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={**_TEXT, "autofocus": True}))
    source = forms.ChoiceField(choices=SOURCES, initial="file", widget=forms.RadioSelect)
    url = forms.URLField(required=False, assume_scheme="https", widget=forms.URLInput(attrs=_TEXT),
                         help_text="http or https, from a host the cloud's operators allow.")
    disk_format = forms.ChoiceField(
        choices=DiskFormat.choices, initial=DiskFormat.QCOW2, widget=forms.Select(attrs=_SELECT)
    )
    visibility = forms.ChoiceField(initial=Visibility.PRIVATE, widget=forms.Select(attrs=_SELECT))
    min_disk = forms.IntegerField(min_value=0, initial=0, label="Minimum disk (GB)",
                                  widget=forms.NumberInput(attrs={"class": "form-control"}))
    min_ram = forms.IntegerField(min_value=0, initial=0, label="Minimum RAM (MiB)",
                                 widget=forms.NumberInput(attrs={"class": "form-control"}))

    def __init__(self, *args, is_admin: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["visibility"].choices = _visibility_choices(is_admin=is_admin)

    def clean(self):
        data = super().clean()
        if data.get("source") == "url" and not data.get("url"):
            self.add_error("url", "Give the URL to import from.")
        return data

    def attrs(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"], "disk_format": data["disk_format"], "container_format": "bare",
            "visibility": data["visibility"], "min_disk": data["min_disk"], "min_ram": data["min_ram"],
        }


def _parse_properties(text: str) -> dict[str, str]:
    properties = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(f"Line {number}: write key=value.")
        properties[key.strip()] = value.strip()
    return properties


class ImageEditForm(forms.Form):
    name = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_TEXT))
    visibility = forms.ChoiceField(widget=forms.Select(attrs=_SELECT))
    min_disk = forms.IntegerField(min_value=0, label="Minimum disk (GB)",
                                  widget=forms.NumberInput(attrs={"class": "form-control"}))
    min_ram = forms.IntegerField(min_value=0, label="Minimum RAM (MiB)",
                                 widget=forms.NumberInput(attrs={"class": "form-control"}))
    protected = forms.BooleanField(required=False, help_text="A protected image cannot be deleted.",
                                   widget=forms.CheckboxInput(attrs={"class": "form-check-input"}))
    tags = forms.CharField(required=False, help_text="Comma-separated.", widget=forms.TextInput(attrs=_TEXT))
    properties = forms.CharField(
        required=False, help_text="One key=value per line (os_distro=debian, hw_disk_bus=scsi ...).",
        widget=forms.Textarea(attrs={"class": "form-control font-monospace", "rows": 6}),
    )

    def __init__(self, *args, image: Image, is_admin: bool = False, **kwargs):
        initial = {
            "name": image.name, "visibility": image.visibility, "min_disk": image.min_disk, "min_ram": image.min_ram,
            "protected": image.protected, "tags": ", ".join(t.value for t in image.tag_set.all()),
            "properties": "\n".join(f"{k}={v}" for k, v in sorted(image.properties.items())),
        }
        super().__init__(*args, initial=initial, **kwargs)
        self.image = image
        choices = _visibility_choices(is_admin=is_admin)
        if image.visibility not in [c[0] for c in choices]:
            choices.append((image.visibility, image.get_visibility_display()))
        self.fields["visibility"].choices = choices

    def clean_properties(self):
        return _parse_properties(self.cleaned_data["properties"])

    def clean_tags(self):
        return list(dict.fromkeys(t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()))

    def changes(self) -> list[PatchOp]:
        """The JSON Patch operations that turn the image into what the form says."""
        data, image = self.cleaned_data, self.image
        ops = [PatchOp("replace", key, data[key]) for key in ("name", "visibility", "min_disk", "min_ram", "protected")
               if data[key] != getattr(image, key)]
        if data["tags"] != [t.value for t in image.tag_set.all()]:
            ops.append(PatchOp("replace", "tags", data["tags"]))
        old, new = image.properties, data["properties"]
        ops += [PatchOp("remove", key) for key in old if key not in new]
        ops += [PatchOp("add", key, value) for key, value in new.items() if old.get(key) != value]
        return ops


class MemberAddForm(forms.Form):
    project = forms.CharField(
        max_length=64, label="Project", help_text="A project's name or id.",
        widget=forms.TextInput(attrs={**_TEXT, "placeholder": "project name or id"}),
    )
