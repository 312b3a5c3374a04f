"""Tiers, their limit rules, accounts and API keys: the database rows everything else is resolved from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from ratelimit_tiers import crypto, rules
from ratelimit_tiers.algorithms import ALGORITHMS
from ratelimit_tiers.names import KeyStatus
from ratelimit_tiers.rules import Rule

if TYPE_CHECKING:
    from datetime import datetime, timedelta


#: Sent with ``keys`` (``(prefix, account_id)`` pairs) by the writes of this module that bypass ``save()``
#: (:meth:`APIKeyQuerySet.revoke`), so that ``invalidation`` evicts those keys.
keys_changed = Signal()

ALGORITHM_CHOICES = [("", _("Default (RATELIMIT_TIERS_ALGORITHM)"))] + [(a, a) for a in ALGORITHMS]


class Tier(models.Model):
    """A plan: its limit rules (:class:`LimitRule`) apply to every key of its accounts."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=255, blank=True)
    shadow = models.BooleanField(
        _("shadow mode"),
        default=False,
        help_text=_("Count and send headers but never refuse; log the requests that would be refused."),
    )

    class Meta:
        ordering = ["pk"]
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")

    def __str__(self) -> str:
        return self.name


class Account(models.Model):
    """A customer: every key of an account inherits its tier's rules and the account's own."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="accounts", verbose_name=_("tier"))
    is_active = models.BooleanField(_("active"), default=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("account")
        verbose_name_plural = _("accounts")

    def __str__(self) -> str:
        return self.name

    def effective_rules(self, now: float | None = None) -> tuple[Rule, ...]:
        """The rules that apply to the account's keys at ``now`` (Unix time; default: now)."""
        moment = timezone.now().timestamp() if now is None else now
        tier_rules = [rule.as_rule() for rule in self.tier.rules.all()]
        return rules.effective(tier_rules, [rule.as_rule() for rule in self.rules.all()], moment)


class LimitRule(models.Model):
    """One limit of a tier, or an account's override: ``count`` requests per period.

    A rule of an account replaces its tier's rule of the same category,
    period and scope, or adds to them; until ``until``, if set.
    """

    tier = models.ForeignKey(
        Tier, on_delete=models.CASCADE, null=True, blank=True, related_name="rules", verbose_name=_("tier")
    )
    account = models.ForeignKey(
        Account,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="rules",
        verbose_name=_("account"),
    )
    category = models.CharField(
        _("category"),
        max_length=50,
        blank=True,
        validators=[
            RegexValidator(rules.CATEGORY_RE.pattern, _("Lowercase letters, digits, '.', '_' or '-'."))
        ],
        help_text=_("Empty: each category without a rule of its own for this period and scope."),
    )
    count = models.PositiveIntegerField(_("requests"), validators=[MinValueValidator(1)])
    window_seconds = models.PositiveIntegerField(
        _("sliding window (seconds)"), default=0, help_text=_("0 for a calendar quota.")
    )
    calendar = models.CharField(
        _("calendar quota"),
        max_length=5,
        blank=True,
        choices=[("", "—")] + [(c, _(c)) for c in rules.CALENDARS],
    )
    scope = models.CharField(
        _("counted per"),
        max_length=7,
        choices=[(rules.KEY, _("API key")), (rules.ACCOUNT, _("account (all its keys together)"))],
        default=rules.KEY,
    )
    algorithm = models.CharField(
        _("algorithm"), max_length=16, choices=ALGORITHM_CHOICES, blank=True, default=""
    )
    until = models.DateTimeField(
        _("until"), null=True, blank=True, help_text=_("An account's override stops applying then.")
    )

    class Meta:
        # By the columns, not the relations: ordering by ``tier`` would join its table, and
        # PostgreSQL cannot lock (``select_for_update``) the nullable side of an outer join.
        ordering = ["tier_id", "account_id", "category", "scope", "calendar", "window_seconds"]
        verbose_name = _("limit rule")
        verbose_name_plural = _("limit rules")
        constraints = [
            models.CheckConstraint(
                condition=Q(tier__isnull=False, account__isnull=True)
                | Q(tier__isnull=True, account__isnull=False),
                name="rlt_rule_one_owner",
            ),
            models.CheckConstraint(
                condition=Q(window_seconds__gt=0, calendar="")
                | Q(window_seconds=0, calendar__in=rules.CALENDARS),
                name="rlt_rule_one_period",
            ),
            models.UniqueConstraint(
                fields=["tier", "category", "window_seconds", "calendar", "scope"],
                condition=Q(tier__isnull=False),
                name="rlt_rule_unique_per_tier",
            ),
            models.UniqueConstraint(
                fields=["account", "category", "window_seconds", "calendar", "scope"],
                condition=Q(account__isnull=False),
                name="rlt_rule_unique_per_account",
            ),
        ]

    def __str__(self) -> str:
        rule = self.as_rule()
        return f"{rule.rate} ({rule.name})"

    def clean(self) -> None:
        if self._has_owner("tier") == self._has_owner("account"):
            raise ValidationError(_("A rule belongs to a tier or to an account."))
        if bool(self.window_seconds) == bool(self.calendar):
            raise ValidationError(_("Give a sliding window in seconds, or a calendar quota, not both."))
        if self.category == "all":
            # Rule names and the operators' tables call the rules of every category "all".
            raise ValidationError(
                {"category": _("'all' names the rules of every category: leave the category empty.")}
            )
        if self.calendar and self.algorithm:
            raise ValidationError(
                {"algorithm": _("A calendar quota is a counter: leave the algorithm empty.")}
            )
        if self.until is not None and not self._has_owner("account"):
            raise ValidationError({"until": _("Only an account's override can end.")})

    def _has_owner(self, field: str) -> bool:
        # An inline on a tier or an account being added sets the owner before it has an id.
        return getattr(self, f"{field}_id") is not None or getattr(self, field) is not None

    def as_rule(self) -> Rule:
        until: datetime | None = self.until
        return Rule(
            count=self.count,
            window=self.window_seconds,
            calendar=self.calendar,
            category=self.category,
            scope=self.scope,
            algorithm=self.algorithm,
            until=until.timestamp() if until is not None else None,
            origin="account" if self.account_id is not None else "tier",
        )


class APIKeyQuerySet(models.QuerySet["APIKey"]):
    def revoke(self) -> int:
        """Revoke the keys of this queryset that are not revoked yet; return how many.

        Unlike ``update(revoked=True)``, which sends no signals and so leaves
        their cached policies active for up to ``POLICY_TIMEOUT``, this evicts
        them (now and again when the transaction commits), like ``save()``.
        """
        with transaction.atomic():
            rows = list(
                self.filter(revoked=False).select_for_update().values_list("pk", "prefix", "account_id")
            )
            count = self.model._default_manager.filter(pk__in=[row[0] for row in rows]).update(revoked=True)
            keys_changed.send(sender=self.model, keys=[(prefix, account) for _, prefix, account in rows])
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


class DailyUsage(models.Model):
    """One key's requests in one category on one UTC day, rolled up from the store's ledger.

    Written only by ``manage.py ratelimit_tiers_rollup``, which adds each
    finished hour once (:class:`RolledHour`). Kept when the key or its account
    is deleted (their names stay), so that past usage can still be billed.
    """

    day = models.DateField(_("day (UTC)"))
    account = models.ForeignKey(
        Account,
        on_delete=models.SET_NULL,
        null=True,
        related_name="daily_usage",
        verbose_name=_("account"),
    )
    account_name = models.CharField(_("account name"), max_length=200)
    key = models.ForeignKey(
        "APIKey", on_delete=models.SET_NULL, null=True, related_name="daily_usage", verbose_name=_("API key")
    )
    key_prefix = models.CharField(_("key prefix"), max_length=crypto.PREFIX_LENGTH)
    category = models.CharField(_("category"), max_length=50)
    admitted = models.PositiveBigIntegerField(_("admitted"), default=0)
    refused = models.PositiveBigIntegerField(_("refused"), default=0)
    #: Refusals per refusing rule's name (``{"all-60s": 3}``).
    refused_by = models.JSONField(_("refused by rule"), default=dict, blank=True)
    last_refused = models.DateTimeField(_("last refused"), null=True, blank=True)

    class Meta:
        ordering = ["-day", "account_name", "key_prefix", "category"]
        constraints = [
            models.UniqueConstraint(fields=["day", "key_prefix", "category"], name="rlt_daily_usage_unique"),
        ]
        indexes = [models.Index(fields=["account", "day"], name="rlt_daily_usage_account")]
        verbose_name = _("daily usage")
        verbose_name_plural = _("daily usage")

    def __str__(self) -> str:
        return f"{self.day} {self.key_prefix} {self.category}"


class RolledHour(models.Model):
    """A UTC hour whose ledger counts were added to :class:`DailyUsage`: each is added once, ever."""

    hour = models.DateTimeField(_("hour (UTC)"), unique=True)
    rolled_at = models.DateTimeField(_("rolled up at"), auto_now_add=True)

    class Meta:
        ordering = ["-hour"]
        verbose_name = _("rolled-up hour")
        verbose_name_plural = _("rolled-up hours")

    def __str__(self) -> str:
        return self.hour.isoformat()
