"""Names with a meaning of their own in spaces and tables, spelled in one place."""

# The mixture with no intermediate tasks: the baseline every gain is measured against.
NO_MIXTURE = "none"
