from allauth.account.adapter import DefaultAccountAdapter

from apps.tenants.services import user_set_password


class NoSignupAccountAdapter(DefaultAccountAdapter):
    """Accounts are made by operators (command or admin pages), never by self sign-up."""

    def is_open_for_signup(self, request):
        return False

    def set_password(self, user, password: str) -> None:
        """A password changed in the portal (change or reset) goes through the identity service,
        as one changed through the API does: checked by the password rules, and the user's API
        tokens end."""
        user_set_password(user=user, password=password)
