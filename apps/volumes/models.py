"""The volumes domain arrives in its own issue; the app exists so the layout is complete."""
