"""A raw API key never shows in an error report (``sensitive_variables``).

Each test makes something fail while a raw key is in a local variable, then
renders Django's report of the exception (the text and the HTML the admins'
e-mail gets, with ``DEBUG = False``) and looks for the secret in it.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import resolve
from django.views.debug import ExceptionReporter
from django.views.decorators.debug import sensitive_variables
from rest_framework.test import APIRequestFactory

from ratelimit_tiers import authentication, clients, crypto
from ratelimit_tiers.admin import APIKeyAdmin
from ratelimit_tiers.authentication import APIKeyAuthentication
from ratelimit_tiers.models import APIKey


class Boom(Exception):
    pass


def boom(*args, **kwargs):
    raise Boom("injected")


def report(excinfo, request=None):
    """Django's error report of the exception, as text and as HTML, from below the test's own frame."""
    reporter = ExceptionReporter(request, excinfo.type, excinfo.value, excinfo.tb.tb_next)
    return reporter.get_traceback_text() + reporter.get_traceback_html()


def call_view(url, raw_key):
    request = APIRequestFactory().get(url, HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    with pytest.raises(Boom) as excinfo:
        resolve(url).func(request)
    return report(excinfo, request)


def inject(monkeypatch, where):
    if where == "identity cache":
        monkeypatch.setattr(authentication.identities, "get", boom)
    elif where == "database lookup":
        monkeypatch.setattr(APIKeyAuthentication, "_load", staticmethod(boom))
    elif where == "last_used":
        monkeypatch.setattr(authentication, "record_use", boom)
    else:  # The client's address, for a refused key: the frame holds every header.
        APIKey.objects.update(revoked=True)
        monkeypatch.setattr(clients, "parse_ip", boom)


@pytest.mark.parametrize("url", ["/api/whoami/", "/api/whoami/unthrottled/"])
@pytest.mark.parametrize("where", ["identity cache", "database lookup", "last_used", "client address"])
def test_authentication_failures_do_not_report_the_key(raw_key, monkeypatch, url, where):
    prefix, secret = raw_key.split(".")
    inject(monkeypatch, where)
    text = call_view(url, raw_key)
    assert "Boom" in text and prefix in text  # The report has the frames and their variables...
    assert secret not in text  # ...but not the secret.


def recording(shown, predicate=lambda message: True):
    """A stand-in that keeps what it is given and fails when ``predicate`` says so."""

    def fail(*args, **kwargs):
        message = str(args[-1])
        shown.append(message)
        if predicate(message):
            raise Boom("injected")

    return fail


def shown_secret(shown):
    """The secret of the raw key in the messages a stand-in received."""
    for message in shown:
        for word in message.split():
            parts = crypto.split_key(word.rstrip("."))
            if parts:
                return parts[1]
    raise AssertionError(f"no raw key in {shown}")


@pytest.mark.parametrize("action", ["add", "rotate"])
def test_admin_does_not_report_the_key(admin_client, account, raw_key, monkeypatch, action):
    issued = []
    generate_key = crypto.generate_key

    def recording_generate_key():
        issued.append(generate_key())
        return issued[-1]

    @sensitive_variables()  # This stand-in's own frame is in the report too.
    def fail(*args, **kwargs):
        raise Boom("injected")

    monkeypatch.setattr("ratelimit_tiers.models.crypto.generate_key", recording_generate_key)
    with pytest.raises(Boom) as excinfo:
        if action == "add":
            monkeypatch.setattr(APIKey, "save", fail)  # save_model holds the new secret.
            admin_client.post("/admin/ratelimit_tiers/apikey/add/", {"account": account.pk, "name": "ci"})
        else:
            monkeypatch.setattr(APIKeyAdmin, "new_keys_response", fail)  # rotate_keys holds it.
            data = {"action": "rotate_keys", "_selected_action": [APIKey.objects.get().pk]}
            admin_client.post("/admin/ratelimit_tiers/apikey/", data)
    text = report(excinfo)
    assert "Boom" in text
    [(raw, _prefix, _hashed)] = issued
    assert crypto.split_key(raw)[1] not in text


@pytest.mark.parametrize("command", ["create_api_key", "ratelimit_tiers_rotate_key"])
def test_commands_do_not_report_the_key(account, raw_key, monkeypatch, command):
    shown = []
    monkeypatch.setattr(
        "django.core.management.base.OutputWrapper.write",
        recording(shown, lambda message: any(crypto.split_key(w) for w in message.split())),
    )
    args = ["acme"] if command == "create_api_key" else [raw_key.split(".")[0]]
    with pytest.raises(Boom) as excinfo:
        call_command(command, *args)
    text = report(excinfo)
    assert "Boom" in text
    assert shown_secret(shown) not in text


def test_rotation_does_not_report_the_key(account, raw_key, monkeypatch):
    from datetime import timedelta

    issued = []
    generate = crypto.generate_key

    def spy():
        issued.append(generate())
        return issued[-1]

    monkeypatch.setattr(crypto, "generate_key", spy)
    save = APIKey.save

    def fail_on_update(self, *args, **kwargs):
        if kwargs.get("update_fields"):
            raise Boom("injected")
        save(self, *args, **kwargs)

    monkeypatch.setattr(APIKey, "save", fail_on_update)
    with pytest.raises(Boom) as excinfo:
        APIKey.objects.get().rotate(timedelta(hours=1))
    text = report(excinfo)
    assert "Boom" in text
    assert crypto.split_key(issued[0][0])[1] not in text


def test_key_generation_does_not_report_the_secret(account, monkeypatch):
    issued = []
    token_urlsafe = crypto.secrets.token_urlsafe

    def spy(nbytes):
        issued.append(token_urlsafe(nbytes))
        return issued[-1]

    monkeypatch.setattr(crypto.secrets, "token_urlsafe", spy)
    monkeypatch.setattr(crypto, "hash_secret", boom)  # Receives the secret, by another name.
    with pytest.raises(Boom) as excinfo:
        APIKey.objects.create_key(account=account, name="new")
    text = report(excinfo)
    assert "Boom" in text
    assert issued[0] not in text
