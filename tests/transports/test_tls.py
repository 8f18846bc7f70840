"""Which certificates a pool trusts: `verify=`, `SSL_CERT_FILE`/`SSL_CERT_DIR`, certifi."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme

from amaimedia._transports._tls import TLSSettings


def subjects(settings: TLSSettings) -> list[str]:
    """The organisations of the CAs a pool's context trusts."""
    names = []
    for ca in settings.ssl_context().get_ca_certs():
        for part in ca["subject"]:
            names += [value for key, value in part if key == "organizationName"]
    return names


def test_a_ca_bundle_rotated_on_disk_is_read_afresh(tmp_path: Path) -> None:
    bundle = tmp_path / "corporate-ca.pem"
    first, second = trustme.CA(organization_name="first"), trustme.CA(organization_name="second")
    first.cert_pem.write_to_path(str(bundle))
    assert subjects(TLSSettings.create(str(bundle), trust_env=True)) == ["first"]

    second.cert_pem.write_to_path(str(bundle))
    stat = bundle.stat()
    os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert subjects(TLSSettings.create(str(bundle), trust_env=True)) == ["second"]


def test_one_bundle_is_loaded_once_for_every_pool(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    one = TLSSettings.create(str(bundle), trust_env=True)
    other = TLSSettings.create(str(bundle), trust_env=True)
    assert one.ssl_context() is other.ssl_context()
    assert one.loaded


def test_ssl_cert_file_wins_over_ssl_cert_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    trustme.CA(organization_name="from the file").cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    settings = TLSSettings.create(True, trust_env=True)
    assert settings.cafile == str(bundle)
    assert subjects(settings) == ["from the file"]
    assert TLSSettings.create(True, trust_env=False).source == "certifi"


def test_a_file_with_no_certificate_is_refused_when_first_used(tmp_path: Path) -> None:
    bundle = tmp_path / "empty.pem"
    bundle.write_text("not a certificate\n")
    settings = TLSSettings.create(str(bundle), trust_env=True)
    with pytest.raises(ValueError, match="holds no usable CA certificate"):
        settings.ssl_context()


def test_a_bundle_removed_before_it_is_loaded_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    settings = TLSSettings.create(str(bundle), trust_env=True)
    assert repr(settings) == f"TLSSettings(source='verify ({bundle})')"
    bundle.unlink()
    with pytest.raises(ValueError, match="holds no usable CA certificate"):
        settings.ssl_context()
