"""Portal forms for volumes, snapshots and backups: they parse and check input; the services
decide (states, quotas, sizes)."""

from django import forms

from apps.images.models import ImageStatus
from apps.images.selectors import image_visible
from apps.instances.selectors import instance_list
from apps.volumes import selectors
from apps.volumes.services import ATTACH_VM_STATES
from apps.volumes.states import SnapshotStatus, VolumeStatus

_TEXT = {"class": "form-control", "autocomplete": "off"}
_NUMBER = {"class": "form-control", "min": 1}
_SELECT = {"class": "form-select"}
_CHECK = {"class": "form-check-input"}


class _Named(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return obj.name or str(obj.pk)


class VolumeCreateForm(forms.Form):
    SOURCES = [("empty", "Empty"), ("image", "An image"), ("snapshot", "A snapshot")]

    name = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs={**_TEXT, "autofocus": True}))
    source = forms.ChoiceField(choices=SOURCES, initial="empty", widget=forms.RadioSelect)
    size = forms.IntegerField(min_value=1, required=False, label="Size (GiB)", widget=forms.NumberInput(attrs=_NUMBER),
                              help_text="From a snapshot or an image: at least its size (empty: its size).")
    image = _Named(queryset=None, required=False, widget=forms.Select(attrs=_SELECT))
    snapshot = _Named(queryset=None, required=False, widget=forms.Select(attrs=_SELECT))
    volume_type = _Named(queryset=None, required=False, label="Type", empty_label="Default",
                         widget=forms.Select(attrs=_SELECT))
    description = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_TEXT))

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].queryset = image_visible(user=user, project=project).filter(
            status=ImageStatus.ACTIVE, disk_format__in=("qcow2", "raw")).order_by("name")
        self.fields["snapshot"].queryset = selectors.snapshot_list(user=user, project=project).filter(
            status=SnapshotStatus.AVAILABLE).order_by("name")
        self.fields["volume_type"].queryset = selectors.volume_type_list(user=user, project=project)

    def clean(self):
        data = super().clean()
        source = data.get("source")
        if source == "empty" and not data.get("size"):
            self.add_error("size", "An empty volume needs a size.")
        if source in ("image", "snapshot") and not data.get(source):
            self.add_error(source, f"Choose the {source} to make the volume from.")
        return data


class AttachForm(forms.Form):
    instance = _Named(queryset=None, label="Instance", widget=forms.Select(attrs=_SELECT))

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["instance"].queryset = instance_list(user=user, project=project).filter(
            vm_state__in=ATTACH_VM_STATES).order_by("name")


class ExtendForm(forms.Form):
    new_size = forms.IntegerField(min_value=1, label="New size (GiB)", widget=forms.NumberInput(attrs=_NUMBER))


class SnapshotForm(forms.Form):
    name = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_TEXT))
    force = forms.BooleanField(required=False, label="Snapshot it while it is attached (crash-consistent)",
                               widget=forms.CheckboxInput(attrs=_CHECK))


class BackupForm(forms.Form):
    name = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_TEXT))
    incremental = forms.BooleanField(required=False, label="Incremental (only what changed since the last backup)",
                                     widget=forms.CheckboxInput(attrs=_CHECK))


class RestoreForm(forms.Form):
    TARGETS = [("new", "A new volume"), ("existing", "An existing volume (its data is replaced)")]

    target = forms.ChoiceField(choices=TARGETS, initial="new", widget=forms.RadioSelect)
    name = forms.CharField(max_length=255, required=False, label="Name of the new volume",
                           widget=forms.TextInput(attrs=_TEXT))
    volume = _Named(queryset=None, required=False, widget=forms.Select(attrs=_SELECT))

    def __init__(self, *args, user, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["volume"].queryset = selectors.volume_list(user=user, project=project).filter(
            status=VolumeStatus.AVAILABLE).order_by("name")

    def clean(self):
        data = super().clean()
        if data.get("target") == "existing" and not data.get("volume"):
            self.add_error("volume", "Choose the volume to restore into.")
        return data
