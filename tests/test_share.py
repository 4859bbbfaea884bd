"""AccountShare: runs on one machine that drive one account learn their fair share."""

from __future__ import annotations

from pathlib import Path

from batchgen.rivya.share import FORGET, STALE, SYNC_INTERVAL, AccountShare, account_digest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fair_share_is_what_the_rate_bound_runs_get_divided_among_them(tmp_path: Path) -> None:
    clock = Clock()
    a, b, c = (AccountShare(tmp_path, clock=clock, name=n) for n in "abc")
    assert a.sync(60.0, True) is None  # alone: no share to keep to
    assert b.sync(20.0, True) == 40.0
    # c is not rate-bound: it keeps the 10/s it uses, the bound runs share the rest
    assert c.sync(10.0, False) is None
    clock.now += SYNC_INTERVAL
    assert a.due() and a.sync(60.0, True) == 40.0
    assert a.others == 2


def test_stale_participants_are_ignored_then_removed(tmp_path: Path) -> None:
    clock = Clock()
    a, b = (
        AccountShare(tmp_path, clock=clock, name="a"),
        AccountShare(tmp_path, clock=clock, name="b"),
    )
    b.sync(30.0, True)
    assert a.sync(50.0, True) == 40.0
    clock.now += STALE + 0.1  # b crashed without leaving
    assert a.sync(50.0, True) is None and a.others == 0
    assert (tmp_path / "b").exists()
    clock.now += FORGET
    a.sync(50.0, True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    a.close()
    assert not tmp_path.exists()  # the last run to leave removes the account's folder
    b.sync(30.0, True)  # and a run still going makes it again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_malformed_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("not numbers\n", encoding="ascii")
    a = AccountShare(tmp_path, clock=Clock(), name="a")
    assert a.sync(10.0, True) is None and a.others == 0


def test_folder_is_named_by_a_digest_never_the_key(tmp_path: Path) -> None:
    key = "rvya_sk_secret_value_123"
    share = AccountShare.for_account("http://127.0.0.1:1/", key, folder=tmp_path)
    assert share is not None
    share.sync(5.0, True)
    names = [p.name for p in tmp_path.rglob("*")]
    text = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert all(key not in n and "secret" not in n for n in names)
    assert key not in text
    assert share.folder.name == account_digest("http://127.0.0.1:1", key)
    # another key or another service: another account
    assert account_digest("http://127.0.0.1:1", key + "x") != share.folder.name
    assert account_digest("http://127.0.0.1:2", key) != share.folder.name


def test_an_unwritable_folder_turns_sharing_off(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="ascii")
    assert AccountShare.for_account("http://x", "rvya_sk_k", folder=blocker) is None
    share = AccountShare(blocker / "sub", clock=Clock(), name="a")
    assert share.sync(10.0, True) is None
    assert not share.enabled and not share.due()
