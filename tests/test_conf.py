"""The settings object caches values and drops them when settings change."""

from __future__ import annotations

from django.test import override_settings

from ratelimit_tiers.conf import conf


def test_defaults_overrides_and_reload(settings):
    assert conf.POLICY_TIMEOUT == 300
    settings.RATELIMIT_TIERS_POLICY_TIMEOUT = 5  # pytest-django sends setting_changed.
    assert conf.POLICY_TIMEOUT == 5
    with override_settings(RATELIMIT_TIERS_POLICY_TIMEOUT=7):
        assert conf.POLICY_TIMEOUT == 7
    assert conf.POLICY_TIMEOUT == 5


def test_a_test_setting_is_gone_after_its_test():
    assert conf.POLICY_TIMEOUT == 300
