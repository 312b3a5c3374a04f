"""What a DRF view's throttles are, read from its classes without building them, and kept per view class.

Authentication asks whether a throttle of the view checks the key's state; the
throttle asks whether it is the view's only one (then no other can refuse the
request, and there is nothing to give back). Both would otherwise read the
view's throttle classes on every request. Nothing here imports DRF (which
imports authentication classes while ``rest_framework.views`` loads) nor the
rest of the app.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: View classes a process keeps facts for; past that it starts over. Views are
#: few; this only bounds classes made at run time.
MAX_VIEWS = 1024


class ViewThrottles(NamedTuple):
    """What a view's ``throttle_classes`` say, for views whose throttles are those classes."""

    #: The ``throttle_classes`` these facts were read from: a view class's own,
    #: or another object (``as_view(throttle_classes=...)``, a patch) read anew.
    classes: Any
    #: ``True`` when DRF's ``get_throttles`` builds the view's throttles, one per class.
    #: ``False`` for a view that overrides it (it may pick throttles per request):
    #: then the other facts say nothing, and the caller must ask the view.
    fixed: bool
    #: One of the classes has a true ``checks_key_state``.
    checks_key_state: bool
    #: The view's only throttle class, if it has exactly one.
    only: type | None


_known: dict[type, ViewThrottles] = {}


def of(view: Any) -> ViewThrottles:
    """The facts of ``view``'s throttle classes: read once per view class, then from memory.

    Lock-free: a read and a write of a dict are atomic, and two threads that
    miss at once compute the same facts.
    """
    cls = type(view)
    classes = getattr(view, "throttle_classes", ())
    known = _known.get(cls)
    if known is not None and known.classes is classes:
        return known
    # DRF's own ``APIView.get_throttles`` (compared by module: this cannot import DRF's views).
    fixed = getattr(getattr(cls, "get_throttles", None), "__module__", None) == "rest_framework.views"
    listed = tuple(classes)
    known = ViewThrottles(
        classes,
        fixed,
        any(getattr(throttle, "checks_key_state", False) for throttle in listed),
        listed[0] if len(listed) == 1 else None,
    )
    if len(_known) >= MAX_VIEWS:
        _known.clear()
    _known[cls] = known
    return known
