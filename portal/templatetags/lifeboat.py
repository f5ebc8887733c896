"""Template helpers. Templates never test roles: they ask these tags, which ask `access`."""

from django import template

from vaults import access

register = template.Library()


@register.simple_tag(takes_context=True)
def site_caps(context) -> dict[str, bool]:
    """Site-wide capabilities of the current user (create vaults, manage the inventory, …)."""
    request = context.get("request")
    return access.site_capabilities(request.user if request else None)


@register.filter
def badge(value) -> str:
    """CSS classes of a state badge: the state's own class plus its tone."""
    value = str(value or "unknown")
    return f"badge badge-{value.replace('_', '-')} tone-{TONES.get(value, 'neutral')}"


TONES = {
    "completed": "good",
    "protected": "good",
    "installed": "good",
    "running": "good",
    "application": "good",
    "completed_with_warnings": "warn",
    "initial_backup_pending": "warn",
    "file_system": "warn",
    "cancelling": "warn",
    "failed": "bad",
    "protection_error": "bad",
    "crash": "bad",
    "in_progress": "busy",
    "queued": "neutral",
    "protection_stopped": "muted",
    "soft_deleted": "muted",
    "cancelled": "muted",
    "stopped": "muted",
    "not_installed": "muted",
}


@register.filter
def label(value, choices) -> str:
    """`status|label:statuses` → the human label of a choice value."""
    return dict(choices).get(value, value)
