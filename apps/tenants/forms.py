"""Portal forms for identity: they parse and check input; the services in
apps/tenants/services.py decide."""

from datetime import UTC, datetime

from django import forms
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.utils import timezone

from apps.tenants.models import Role
from apps.tenants.selectors import project_list_visible, role_list, user_list
from cloudmgr.models import INT_MAX

def _text(**attrs) -> forms.TextInput:
    return forms.TextInput(attrs={"class": "form-control", "autocomplete": "off", **attrs})


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=64, strip=True, widget=_text(autofocus=True))
    description = forms.CharField(
        required=False, strip=True, widget=forms.Textarea(attrs={"class": "form-control", "rows": 2})
    )


class QuotaLimitForm(forms.Form):
    """One quota's new limit; -1 means unlimited."""

    resource = forms.CharField(widget=forms.HiddenInput)
    limit = forms.IntegerField(min_value=-1, max_value=INT_MAX,
                               widget=forms.NumberInput(attrs={"class": "form-control form-control-sm"}))


class UserCreateForm(forms.Form):
    """A new user. Without a password one is generated, and shown once. (The service checks the
    password against the password rules.)"""

    username = forms.CharField(
        max_length=150, strip=True, validators=[UnicodeUsernameValidator()], widget=_text(autofocus=True),
        help_text="Letters, digits and @ . + - _ only.",
    )
    email = forms.EmailField(required=False, widget=forms.EmailInput(attrs={"class": "form-control"}))
    password = forms.CharField(
        required=False, strip=False,
        widget=forms.PasswordInput(attrs={"class": "form-control", "autocomplete": "new-password"}),
        help_text="Leave empty to generate a strong one; it is shown once, on the next page.",
    )
    is_admin = forms.BooleanField(
        required=False, label="Cloud administrator",
        widget=forms.CheckboxInput(attrs={"class": "form-check-input"}),
        help_text="Acts on every project, and manages projects, users and roles.",
    )


class UserEnableForm(forms.Form):
    enabled = forms.TypedChoiceField(choices=[("1", "enable"), ("0", "disable")], coerce=lambda v: v == "1")


class _UserChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, user):
        return user.username if user.is_active else f"{user.username} (disabled)"


class RoleGrantForm(forms.Form):
    """Give a user a role on a project (the default roles, and any an operator has made)."""

    user = _UserChoiceField(
        queryset=None, empty_label="Choose a user", widget=forms.Select(attrs={"class": "form-select"})
    )
    project = forms.ModelChoiceField(
        queryset=None, empty_label="Choose a project", widget=forms.Select(attrs={"class": "form-select"})
    )
    role = forms.ChoiceField(initial=Role.MEMBER, widget=forms.Select(attrs={"class": "form-select"}))

    def __init__(self, *args, viewer, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = user_list(viewer=viewer)
        self.fields["project"].queryset = project_list_visible(viewer=viewer)
        self.fields["role"].choices = [(role.name, role.name) for role in role_list()]


class RoleRevokeForm(forms.Form):
    """One role assignment of a user, as its Revoke button posts it."""

    user = forms.ModelChoiceField(queryset=None, widget=forms.HiddenInput)
    project = forms.ModelChoiceField(queryset=None, widget=forms.HiddenInput)
    role = forms.CharField(max_length=64, widget=forms.HiddenInput)

    def __init__(self, *args, viewer, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = user_list(viewer=viewer)
        self.fields["project"].queryset = project_list_visible(viewer=viewer)


class ApplicationCredentialCreateForm(forms.Form):
    """An application credential for the current project. Its expiry is read as UTC."""

    name = forms.CharField(max_length=255, strip=True, widget=_text())
    description = forms.CharField(required=False, strip=True, max_length=255, widget=_text())
    expires_at = forms.DateTimeField(
        required=False, label="Expires (UTC)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"class": "form-control", "type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty: it never expires.",
    )

    def clean_expires_at(self) -> datetime | None:
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is None:
            return None
        if timezone.is_naive(expires_at):
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at


class ApplicationCredentialFileForm(forms.Form):
    """The secret, posted back by the page that showed it once, to put in a file for download
    (the secret is never stored in clear text, so the server cannot make that file later)."""

    secret = forms.CharField(max_length=255, strip=False, widget=forms.HiddenInput)
    format = forms.ChoiceField(choices=[("clouds.yaml", "clouds.yaml"), ("openrc", "openrc")], widget=forms.HiddenInput)
