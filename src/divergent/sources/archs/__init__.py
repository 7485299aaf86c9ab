"""Project-defined architectures that `torch:<module>:<Class>@<checkpoint>` specs can name."""
