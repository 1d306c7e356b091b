"""What the portal's views share about forms."""


def form_problems(form) -> str:
    """A bound form's errors as one line: its own errors, then each field's after the field's label."""
    problems = [str(error) for error in form.non_field_errors()]
    problems += [f"{form[name].label}: {' '.join(errors)}" for name, errors in form.errors.items() if name != "__all__"]
    return " ".join(problems)
