"""Real identity servers for the tests, started in a temp dir and stopped afterwards:
OpenLDAP's `slapd` (Debian) with a small directory, and the npm `oidc-provider`."""

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
NODE_PROVIDER = ROOT / "node_modules" / "oidc-provider"

BASE = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PW = "root-secret"
BIND_DN = f"cn=lifeboat,ou=services,{BASE}"
BIND_PW = "bind-secret"
# name → (password, groups, employeeType)
LDAP_USERS = {
    "alice": ("alice-pw", ["backup-operators"], ""),
    "bob": ("bob-pw", ["backup-operators", "backup-admins"], ""),
    "carol": ("carol-pw", [], "disabled"),
}
LDAP_GROUPS = ["backup-operators", "backup-admins"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {out[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


def _ldif() -> str:
    parts = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: lifeboat\nuserPassword: {BIND_PW}\n",
    ]
    for name, (pw, _groups, kind) in LDAP_USERS.items():
        entry = (
            f"dn: uid={name},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {name}\n"
            f"cn: {name.title()}\nsn: {name.title()}\nmail: {name}@example.org\n"
            f"userPassword: {pw}\n"
        )
        if kind:
            entry += f"employeeType: {kind}\n"
        parts.append(entry)
    for group in LDAP_GROUPS:
        members = [n for n, (_pw, groups, _k) in LDAP_USERS.items() if group in groups]
        entry = f"dn: cn={group},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {group}\n"
        # groupOfNames needs one member at least: the service account stands in.
        for m in members or ["lifeboat"]:
            dn = BIND_DN if m == "lifeboat" else f"uid={m},ou=people,{BASE}"
            entry += f"member: {dn}\n"
        parts.append(entry)
    return "\n".join(parts)


def make_tls(root: Path, name: str = "test-ca") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (root / "ca.pem", root / "cert.pem", root / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def _slapd_conf(root: Path) -> str:
    ca, cert, key = make_tls(root / "tls")
    return f"""
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {root}/slapd.pid
database mdb
maxsize 16777216
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {root}/db
access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by dn.exact="{BIND_DN}" read
  by self read
  by * none
"""


@dataclass
class LdapServer:
    uri: str
    root: Path
    # The same directory over TLS from the first byte, and the CA that signed its certificate.
    ldaps_uri: str = ""
    ca_file: Path = Path()

    def admin(self):  # noqa: ANN201 -- python-ldap's LDAPObject
        import ldap

        conn = ldap.initialize(self.uri)
        conn.simple_bind_s(ROOT_DN, ROOT_PW)
        return conn


@contextmanager
def slapd(root: Path) -> Iterator[LdapServer]:
    (root / "db").mkdir(parents=True)
    conf = root / "slapd.conf"
    conf.write_text(_slapd_conf(root))
    ldif = root / "data.ldif"
    ldif.write_text(_ldif())
    subprocess.run(
        [str(SLAPADD), "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True
    )
    port, tls_port = free_port(), free_port()
    uri = f"ldap://127.0.0.1:{port}"
    ldaps_uri = f"ldaps://127.0.0.1:{tls_port}"
    proc = subprocess.Popen(
        [str(SLAPD), "-h", f"{uri}/ {ldaps_uri}/", "-f", str(conf), "-d", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc, "slapd")
        wait_for_port(tls_port, proc, "slapd (ldaps)")
        yield LdapServer(uri=uri, root=root, ldaps_uri=ldaps_uri, ca_file=root / "tls" / "ca.pem")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class OidcServer:
    issuer: str
    client_id: str
    client_secret: str


@contextmanager
def oidc_provider(
    root: Path, *, redirect_uris: list[str], users: dict[str, dict[str, object]]
) -> Iterator[OidcServer]:
    port = free_port()
    client = {
        "client_id": "lifeboat",
        "client_secret": "client-secret-for-tests",
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    }
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "oidc.json"
    cfg.write_text(json.dumps({"port": port, "clients": [client], "users": users}))
    node = shutil.which("node") or "node"
    proc = subprocess.Popen(
        [node, str(Path(__file__).with_name("oidc_server.mjs")), str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc, "oidc-provider")
        yield OidcServer(
            issuer=f"http://127.0.0.1:{port}",
            client_id=client["client_id"],
            client_secret=client["client_secret"],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
