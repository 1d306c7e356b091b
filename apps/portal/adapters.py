from allauth.account.adapter import DefaultAccountAdapter


class NoSignupAccountAdapter(DefaultAccountAdapter):
    """Accounts are made by operators (command or admin pages), never by self sign-up."""

    def is_open_for_signup(self, request):
        return False
