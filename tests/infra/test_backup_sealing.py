"""Backups are sealed with AES-256-GCM in chunks (deploy/local/backup.py): what is sealed comes back only with the
right key, whole and unaltered; and retention keeps the newest backups."""

from __future__ import annotations

import io
import json
import secrets

import pytest

from deploy.local.backup import CHUNK, MANIFEST, SealedWriter, load_key, new_key_file, prune, unsealed_chunks


def seal(data: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    writer = SealedWriter(out, key)
    for start in range(0, len(data), 100_000):
        writer.write(data[start:start + 100_000])
    writer.close()
    return out.getvalue()


def unseal(sealed: bytes, key: bytes) -> bytes:
    return b"".join(unsealed_chunks(io.BytesIO(sealed), key))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 17])
def test_what_is_sealed_comes_back_whole(size):
    key, data = secrets.token_bytes(32), secrets.token_bytes(size)
    sealed = seal(data, key)
    assert unseal(sealed, key) == data
    if size >= 16:  # a shorter run of random bytes turns up by chance in any ciphertext (1 byte: about 1 in 6)
        assert data[:64] not in sealed


def test_another_key_an_altered_byte_or_a_truncated_file_is_refused():
    key, data = secrets.token_bytes(32), secrets.token_bytes(2 * CHUNK + 5)
    sealed = seal(data, key)
    with pytest.raises(ValueError, match="key"):
        unseal(sealed, secrets.token_bytes(32))
    altered = bytearray(sealed)
    altered[len(sealed) // 2] ^= 1
    with pytest.raises(ValueError):
        unseal(bytes(altered), key)
    last_chunk_length = CHUNK + 16 + 4  # a whole chunk dropped at the end: no chunk says it is the last
    with pytest.raises(ValueError):
        unseal(sealed[: len(sealed) - (5 + 16 + 4)], key)
    with pytest.raises(ValueError):
        unseal(sealed[: len(sealed) - last_chunk_length], key)


def test_a_key_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "backup.key"
    new_key_file(path)
    assert path.stat().st_mode & 0o077 == 0
    assert len(load_key(path)) == 32
    with pytest.raises(FileExistsError):
        new_key_file(path)


def test_retention_keeps_the_newest_backups(tmp_path):
    names = [f"2026120{d}T010000Z" for d in range(1, 6)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST).write_text(json.dumps({}))
    removed = prune(tmp_path, 2)
    assert [p.name for p in removed] == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == names[3:]
