"""Sizes as people read them: IEC units (KiB, MiB, GiB), the one unit system of every page."""

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def iec(value: int | float | str | None) -> str:
    """1536 → "1.5 KiB", 18874368 → "18.0 MiB", 0 → "0 bytes"; None, "" or not a number (not
    known yet) → "—"."""
    if value is None or value == "":
        return "—"
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "—"
    sign = "-" if size < 0 else ""
    size = abs(size)
    if size < 1024:
        return f"{sign}{int(size)} bytes" if size != 1 else f"{sign}1 byte"
    unit = 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{sign}{size:.1f} {_UNITS[unit]}"
