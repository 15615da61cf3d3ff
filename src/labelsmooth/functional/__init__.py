"""The functional API: pure functions, flat namespace (in the spirit of ``composer.functional``)."""

__all__: list[str] = []
