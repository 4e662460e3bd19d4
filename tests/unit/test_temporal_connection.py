"""How vmcp dials Temporal: TLS files and API keys are read when connecting, and what is missing
is named, not buried in a transport error."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from vmcp.config.loading import parse_config
from vmcp.runs.temporal_client import TemporalUnreachable, connect


def _connect_error(temporal: dict[str, object], base: Path) -> str:
    config = parse_config({"temporal": {"address": "127.0.0.1:1", **temporal}}, base_dir=base)
    with pytest.raises(TemporalUnreachable) as raised:
        anyio.run(connect, config)
    return str(raised.value)


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not really a certificate")
    message = _connect_error(
        {"tls": {"server_ca_file": "ca.crt", "client_cert_file": "tls.crt", "client_key_file": "tls.key"}}, tmp_path
    )
    assert "temporal.tls: cannot read" in message and "tls.crt" in message


def test_an_unset_api_key_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMCP_TEST_TEMPORAL_KEY", raising=False)
    message = _connect_error({"api_key": "${VMCP_TEST_TEMPORAL_KEY}"}, tmp_path)
    assert message == "temporal.api_key: environment variable VMCP_TEST_TEMPORAL_KEY is not set"


def test_tls_settings_that_cannot_work_are_config_errors() -> None:
    from vmcp.config.loading import ConfigError

    with pytest.raises(ConfigError, match="client_cert_file and client_key_file go together"):
        parse_config({"temporal": {"tls": {"client_cert_file": "tls.crt"}}})
