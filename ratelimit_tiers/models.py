"""Tiers, accounts and API keys: the database rows everything else is resolved from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.dispatch import Signal
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from ratelimit_tiers import crypto
from ratelimit_tiers.algorithms import ALGORITHMS, CATEGORIES
from ratelimit_tiers.names import KeyStatus

if TYPE_CHECKING:
    from datetime import datetime, timedelta


#: Sent with ``prefixes`` by the writes of this module that bypass ``save()``
#: (:meth:`APIKeyQuerySet.revoke`), so that ``invalidation`` evicts those keys.
keys_changed = Signal()

ALGORITHM_CHOICES = [("", _("Default (RATELIMIT_TIERS_ALGORITHM)"))] + [(a, a) for a in ALGORITHMS]


class Tier(models.Model):
    """A plan: how many requests per window, optionally per endpoint category."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    limit = models.PositiveIntegerField(_("requests per window"))
    window_seconds = models.PositiveIntegerField(
        _("window (seconds)"), default=60, validators=[MinValueValidator(1)]
    )
    read_limit = models.PositiveIntegerField(_("read limit"), null=True, blank=True)
    write_limit = models.PositiveIntegerField(_("write limit"), null=True, blank=True)
    delete_limit = models.PositiveIntegerField(_("delete limit"), null=True, blank=True)
    auth_limit = models.PositiveIntegerField(_("auth limit"), null=True, blank=True)
    algorithm = models.CharField(
        _("algorithm"), max_length=16, choices=ALGORITHM_CHOICES, blank=True, default=""
    )
    description = models.CharField(_("description"), max_length=255, blank=True)
    shadow = models.BooleanField(
        _("shadow mode"),
        default=False,
        help_text=_("Count and send headers but never refuse; log the requests that would be refused."),
    )

    class Meta:
        ordering = ["limit", "name"]
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.window_seconds is not None and self.window_seconds < 1:
            raise ValidationError({"window_seconds": _("The window must be at least 1 second.")})

    def category_limit(self, category: str) -> int:
        """The category's own limit, else the tier's ``limit``."""
        value = getattr(self, f"{category}_limit")
        return self.limit if value is None else int(value)


class Account(models.Model):
    """A customer: every key of an account inherits its limits."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="accounts", verbose_name=_("tier"))
    limit_override = models.PositiveIntegerField(
        _("custom limit"),
        null=True,
        blank=True,
        help_text=_("Replaces the tier's limits in every category (a negotiated deal)."),
    )
    is_active = models.BooleanField(_("active"), default=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("account")
        verbose_name_plural = _("accounts")

    def __str__(self) -> str:
        return self.name

    def limits(self) -> dict[str, int]:
        if self.limit_override is not None:
            return dict.fromkeys(CATEGORIES, self.limit_override)
        return {category: self.tier.category_limit(category) for category in CATEGORIES}


class APIKeyQuerySet(models.QuerySet["APIKey"]):
    def revoke(self) -> int:
        """Revoke the keys of this queryset that are not revoked yet; return how many.

        Unlike ``update(revoked=True)``, which sends no signals and so leaves
        their cached policies active for up to ``POLICY_TIMEOUT``, this evicts
        them (now and again when the transaction commits), like ``save()``.
        """
        with transaction.atomic():
            rows = list(self.filter(revoked=False).select_for_update().values_list("pk", "prefix"))
            count = self.model._default_manager.filter(pk__in=[pk for pk, _ in rows]).update(revoked=True)
            keys_changed.send(sender=self.model, prefixes=[prefix for _, prefix in rows])
        return count


_APIKeyManagerBase = models.Manager.from_queryset(APIKeyQuerySet)


class APIKeyManager(_APIKeyManagerBase["APIKey"]):
    @sensitive_variables("raw_key")
    def assign_key(self, key: APIKey) -> str:
        """Give an unsaved key its prefix and hash; return the raw key, which is never stored."""
        raw_key, key.prefix, key.hashed_secret = crypto.generate_key()
        return raw_key

    @sensitive_variables("raw_key")
    def create_key(self, **fields: Any) -> tuple[APIKey, str]:
        """Create and save a key; return it with the raw key, which is never stored."""
        key = self.model(**fields)
        raw_key = self.assign_key(key)
        key.full_clean()
        key.save()
        return key, raw_key


class APIKey(models.Model):
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="api_keys", verbose_name=_("account")
    )
    name = models.CharField(_("name"), max_length=100, help_text=_("What the key is for."))
    prefix = models.CharField(_("prefix"), max_length=crypto.PREFIX_LENGTH, unique=True, editable=False)
    hashed_secret = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(
        _("expires"), null=True, blank=True, help_text=_("Leave empty for a key that never expires.")
    )
    revoked = models.BooleanField(
        _("revoked"), default=False, help_text=_("A revoked key stops working at once, for good.")
    )
    rotated_to = models.OneToOneField(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="rotated_from",
        verbose_name=_("rotated to"),
        help_text=_("The key that replaced this one; this one works until it expires."),
    )

    objects: ClassVar[APIKeyManager] = APIKeyManager()

    class Meta:
        ordering = ["-created"]
        # Rotating shows a new secret: more than changing a key's name or expiry.
        permissions = [("rotate_apikey", _("Can rotate API keys (and see the new secrets)"))]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Revocation is final even outside forms (DRF api-key enforces the same).
        if self.pk is not None and self._stored_revoked():
            self.revoked = True
        super().save(*args, **kwargs)

    @property
    def has_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def status(self) -> KeyStatus:
        """``"revoked"``, ``"expired"``, ``"rotating"`` (replaced, in its grace period) or ``"active"``."""
        if self.revoked:
            return KeyStatus.REVOKED
        if self.has_expired:
            return KeyStatus.EXPIRED
        if self.rotated_to_id is not None:
            return KeyStatus.ROTATING
        return KeyStatus.ACTIVE

    @sensitive_variables("raw_key")
    def rotate(self, grace: timedelta) -> tuple[APIKey, str]:
        """Issue a new key for the same account and name; this one expires after ``grace``.

        Returns the new key and its raw value, which is never stored. Raises
        ``ValidationError`` for a revoked key or one already rotated, also when
        a concurrent rotation (another process) wins the race.
        """
        key = APIKey.objects.get(pk=self.pk)
        refusal = key._rotation_refusal()
        if refusal is not None:
            raise refusal
        end = timezone.now() + grace
        keeps_expiry = key.expires_at is not None and key.expires_at > end
        new_key = APIKey(
            account_id=key.account_id, name=key.name, expires_at=key.expires_at if keeps_expiry else None
        )
        raw_key = APIKey.objects.assign_key(new_key)
        new_key.full_clean()
        expires_at = end if key.expires_at is None else min(key.expires_at, end)
        with transaction.atomic():
            # Write first: SQLite then waits for a concurrent rotation's lock (its
            # timeout) instead of failing with "database is locked", as a
            # transaction that reads before it writes does.
            new_key.save()
            # Only one rotation finds the row as it was read; a loser rolls back its key.
            claimed = APIKey.objects.filter(
                pk=key.pk, revoked=False, rotated_to__isnull=True, expires_at=key.expires_at
            ).update(rotated_to=new_key, expires_at=expires_at)
            if not claimed:
                raise APIKey.objects.get(pk=key.pk)._rotation_refusal() or ValidationError(
                    _("This key changed while it was being rotated; try again.")
                )
            key.expires_at, key.rotated_to = expires_at, new_key
            key.save(update_fields=["expires_at", "rotated_to"])  # save(): evicts the cached policy.
        self.expires_at, self.rotated_to = key.expires_at, new_key
        return new_key, raw_key

    def _rotation_refusal(self) -> ValidationError | None:
        if self.revoked:
            return ValidationError(_("A revoked key cannot be rotated."))
        if self.rotated_to_id is not None:
            return ValidationError(_("This key has already been rotated."))
        return None

    def clean(self) -> None:
        if self.pk is not None and not self.revoked and self._stored_revoked():
            raise ValidationError({"revoked": _("A revoked key cannot be reinstated.")})

    def _stored_revoked(self) -> bool:
        return APIKey.objects.filter(pk=self.pk, revoked=True).exists()

    def expiry_timestamp(self) -> float | None:
        expires: datetime | None = self.expires_at
        return expires.timestamp() if expires else None
