"""Builds TUF repositories with the reference implementation (python-tuf 7.0) for the
agent's bare TUF client tests.

    python3 scenario.py SCENARIO OUT

writes OUT/root.json (the root the client is initialised with) and one directory per
step, OUT/STEP/metadata/ and OUT/STEP/targets/, each a complete repository as a server
would publish it at that moment. Attack steps are honest repositories with one thing
changed by an attacker who lacks the offline keys (or holds only some). The Rust tests
serve the steps in order over loopback HTTP and say what the client must do with each.
"""

import copy
import hashlib
import os
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

SERIALIZER = JSONSerializer(compact=False)


def in_days(days):
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def key():
    return CryptoSigner.generate_ed25519()


def sign(md, signers):
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)


class Repo:
    """An honest repository: every role signed by its threshold, files published as
    python-tuf's clients expect them (N.ROLE.json and HASH.NAME with consistent
    snapshots)."""

    def __init__(self, consistent=True, root_threshold=1, targets_threshold=1, delegate=False):
        self.consistent = consistent
        self.signers = {
            "root": [key() for _ in range(root_threshold)],
            "timestamp": [key()],
            "snapshot": [key()],
            "targets": [key() for _ in range(targets_threshold)],
        }
        self.root = Metadata(Root(expires=in_days(365), consistent_snapshot=consistent))
        for role, signers in self.signers.items():
            for s in signers:
                self.root.signed.add_key(s.public_key, role)
            self.root.signed.roles[role].threshold = len(signers)
        self.targets = Metadata(Targets(expires=in_days(30)))
        self.snapshot = Metadata(Snapshot(expires=in_days(7)))
        self.timestamp = Metadata(Timestamp(expires=in_days(1)))
        self.delegated = {}
        self.delegated_signers = {}
        self.metadata_files = {}
        self.target_files = {}
        if delegate:
            s = key()
            role = DelegatedRole("role1", [], 1, False, paths=["deleg/*"])
            self.targets.signed.delegations = Delegations({}, roles={"role1": role})
            self.targets.signed.add_key(s.public_key, "role1")
            self.delegated["role1"] = Metadata(Targets(expires=in_days(30)))
            self.delegated_signers["role1"] = [s]
        self.publish_root()

    def clone(self):
        """A copy sharing the (uncopyable) signers."""
        new = copy.copy(self)
        new.root = copy.deepcopy(self.root)
        new.targets = copy.deepcopy(self.targets)
        new.snapshot = copy.deepcopy(self.snapshot)
        new.timestamp = copy.deepcopy(self.timestamp)
        new.delegated = copy.deepcopy(self.delegated)
        new.signers = {k: list(v) for k, v in self.signers.items()}
        new.delegated_signers = dict(self.delegated_signers)
        new.metadata_files = dict(self.metadata_files)
        new.target_files = dict(self.target_files)
        return new

    # --- content -----------------------------------------------------------------
    def add_target(self, name, data, role="targets"):
        md = self.targets if role == "targets" else self.delegated[role]
        md.signed.targets[name] = TargetFile.from_data(name, data, ["sha256"])
        self.target_files[name] = data

    # --- signing and publishing --------------------------------------------------
    def publish_root(self, extra_signers=()):
        sign(self.root, list(self.signers["root"]) + list(extra_signers))
        data = self.root.to_bytes(SERIALIZER)
        self.metadata_files[f"{self.root.signed.version}.root.json"] = data
        self.metadata_files["root.json"] = data

    def _put(self, name, md):
        data = md.to_bytes(SERIALIZER)
        if self.consistent and name != "timestamp":
            self.metadata_files[f"{md.signed.version}.{name}.json"] = data
        self.metadata_files[f"{name}.json"] = data
        return data

    def publish(self, bump=True, targets_signers=None):
        """Sign and publish delegated roles, targets, snapshot, timestamp."""
        for name, md in self.delegated.items():
            if bump:
                md.signed.version += 1
            sign(md, self.delegated_signers[name])
            self._put(name, md)
            self.snapshot.signed.meta[f"{name}.json"] = MetaFile(md.signed.version)
        if bump:
            self.targets.signed.version += 1
        sign(self.targets, self.signers["targets"] if targets_signers is None else targets_signers)
        self._put("targets", self.targets)
        self.snapshot.signed.meta["targets.json"] = MetaFile(self.targets.signed.version)
        self.publish_snapshot(bump)

    def publish_snapshot(self, bump=True):
        if bump:
            self.snapshot.signed.version += 1
        sign(self.snapshot, self.signers["snapshot"])
        self._put("snapshot", self.snapshot)
        self.publish_timestamp(bump)

    def publish_timestamp(self, bump=True):
        if bump:
            self.timestamp.signed.version += 1
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        sign(self.timestamp, self.signers["timestamp"])
        self._put("timestamp", self.timestamp)

    def write(self, out, step, metadata_override=None, target_override=None):
        files = dict(self.metadata_files)
        files.update(metadata_override or {})
        base = os.path.join(out, step)
        for name, data in files.items():
            path = os.path.join(base, "metadata", name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        targets = dict(self.target_files)
        targets.update(target_override or {})
        for name, data in targets.items():
            digest = hashlib.sha256(self.target_files.get(name, data)).hexdigest()
            head, tail = os.path.split(name)
            served = os.path.join(head, f"{digest}.{tail}") if self.consistent else name
            path = os.path.join(base, "targets", served)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def write_trusted_root(self, out):
        with open(os.path.join(out, "root.json"), "wb") as f:
            f.write(self.metadata_files["1.root.json"])


def honest(out, consistent):
    repo = Repo(consistent=consistent, delegate=True)
    repo.write_trusted_root(out)
    repo.add_target("file.txt", b"release 1\n")
    repo.add_target("deleg/a.txt", b"delegated release 1\n", role="role1")
    repo.publish(bump=False)
    repo.write(out, "v1")


def attacks(out):
    # Targets need two of two offline keys.
    repo = Repo(targets_threshold=2)
    repo.write_trusted_root(out)
    repo.add_target("file.txt", b"release 1\n")
    repo.publish(bump=False)
    repo.write(out, "good")
    # An attacker's file on the server that no targets metadata lists.
    repo.write(out, "unlisted_target", target_override={"evil.txt": b"not signed\n"})
    # The right length, one byte flipped.
    repo.write(out, "tampered_target", target_override={"file.txt": b"release 2\n"})
    good = repo.clone()

    def variant(step, change):
        r = good.clone()
        change(r)
        r.write(out, step)

    def evil_targets(signers):
        def change(r):
            r.add_target("file.txt", b"malware\n")
            r.publish(targets_signers=signers)

        return change

    variant("targets_one_signature", evil_targets(good.signers["targets"][:1]))
    variant("targets_unknown_key", evil_targets([key(), key()]))
    variant("targets_unsigned", evil_targets([]))

    def expire(role):
        def change(r):
            getattr(r, role).signed.expires = in_days(-1)
            r.publish()

        return change

    variant("timestamp_expired", expire("timestamp"))
    variant("snapshot_expired", expire("snapshot"))
    variant("targets_expired", expire("targets"))

    def mix_and_match(r):
        # Snapshot v2 names targets v2, but the server hands out targets v1's bytes.
        old = r.metadata_files["1.targets.json"]
        r.add_target("file.txt", b"release 2\n")
        r.publish()
        r.metadata_files["2.targets.json"] = old
        r.metadata_files["targets.json"] = old

    variant("mix_and_match", mix_and_match)

    # Version 2 of everything, then an attacker replays version 1 pieces.
    v2 = good.clone()
    v2.add_target("file.txt", b"release 2\n")
    v2.publish()
    v2.write(out, "v2")
    # Replay of the whole version 1 repository (timestamp v1).
    good.write(out, "rollback_timestamp")

    # A new timestamp (hub-held key) pointing at the old snapshot.
    def snapshot_rollback(r):
        r.snapshot = copy.deepcopy(good.snapshot)
        r.timestamp.signed.version = 3
        r.publish_timestamp(bump=False)

    r = v2.clone()
    snapshot_rollback(r)
    r.write(out, "rollback_snapshot")

    # New timestamp and snapshot (hub-held keys) naming the old targets: a hub compromise
    # cannot take a device back to an older signed release (UPD-4).
    r = v2.clone()
    r.targets = copy.deepcopy(good.targets)
    r.snapshot.signed.meta["targets.json"] = MetaFile(1)
    r.publish_snapshot()
    r.write(out, "rollback_targets")


def rotation(out):
    # Two of two root keys.
    repo = Repo(root_threshold=2)
    repo.write_trusted_root(out)
    repo.add_target("file.txt", b"release 1\n")
    repo.publish(bump=False)
    repo.write(out, "v1")
    # Root v2: new root keys (threshold 2) and a new timestamp key, signed by the old and
    # the new root keys; then root v3 signed by v2's keys. The client walks 1 -> 2 -> 3.
    old_root = list(repo.signers["root"])
    for s in old_root:
        repo.root.signed.revoke_key(s.public_key.keyid, "root")
    repo.signers["root"] = [key(), key()]
    for s in repo.signers["root"]:
        repo.root.signed.add_key(s.public_key, "root")
    repo.root.signed.revoke_key(repo.signers["timestamp"][0].public_key.keyid, "timestamp")
    repo.signers["timestamp"] = [key()]
    repo.root.signed.add_key(repo.signers["timestamp"][0].public_key, "timestamp")
    repo.root.signed.version = 2
    repo.publish_root(extra_signers=old_root)
    repo.root.signed.version = 3
    repo.publish_root()
    repo.publish_timestamp()
    repo.write(out, "rotated")
    rotated = repo

    def bad_v4(step, signers, version=4):
        r = rotated.clone()
        v3_keys = list(r.signers["root"])
        for s in v3_keys:
            r.root.signed.revoke_key(s.public_key.keyid, "root")
        r.signers["root"] = [key(), key()]
        for s in r.signers["root"]:
            r.root.signed.add_key(s.public_key, "root")
        r.root.signed.version = version
        data_signers = signers(v3_keys, r.signers["root"])
        sign(r.root, data_signers)
        data = r.root.to_bytes(SERIALIZER)
        r.metadata_files["4.root.json"] = data
        r.write(out, step)

    # Signed by the new keys only: not by the old threshold.
    bad_v4("rotation_without_old_keys", lambda old, new: new)
    # One of the two old keys: below the old threshold.
    bad_v4("rotation_below_old_threshold", lambda old, new: old[:1] + new)
    # All signatures, but 4.root.json claims to be version 5 (not N+1).
    bad_v4("rotation_skips_a_version", lambda old, new: old + new, version=5)


def image(version):
    """A firmware image of a few hundred KiB (so a download can be cut and resumed)."""
    line = f"MODEL firmware {version}\n".encode()
    return line * (300_000 // len(line))


def firmware(out):
    """Firmware releases of product MODEL: 1.0.0 (older), 2.0.0 (version bound by the
    name), 3.0.0 (version and support end in the signed `custom` object), and a target
    whose name claims 9.0.0 but whose signed custom.version is 1.5.0."""
    repo = Repo()
    repo.write_trusted_root(out)
    repo.add_target("MODEL-1.0.0.img", image("1.0.0"))
    repo.add_target("MODEL-2.0.0.img", image("2.0.0"))
    repo.add_target("MODEL-3.0.0.img", image("3.0.0"))
    repo.targets.signed.targets["MODEL-3.0.0.img"].unrecognized_fields["custom"] = {
        "product": "MODEL", "version": "3.0.0", "support_until": "2031-12-31"}
    repo.add_target("MODEL-9.0.0.img", image("1.5.0"))
    repo.targets.signed.targets["MODEL-9.0.0.img"].unrecognized_fields["custom"] = {
        "product": "MODEL", "version": "1.5.0"}
    repo.publish(bump=False)
    repo.write(out, "v1")
    # The same metadata; the server's 2.0.0 image has one byte changed.
    bad = bytearray(image("2.0.0"))
    bad[1000] ^= 1
    repo.write(out, "tampered", target_override={"MODEL-2.0.0.img": bytes(bad)})


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if scenario == "honest":
        honest(out, consistent=True)
    elif scenario == "honest-plain":
        honest(out, consistent=False)
    elif scenario == "attacks":
        attacks(out)
    elif scenario == "rotation":
        rotation(out)
    elif scenario == "firmware":
        firmware(out)
    else:
        sys.exit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
