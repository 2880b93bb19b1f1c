"""Workspace confinement without HTTP: every way out of the workspace is refused.

``runtime.workspace`` resolves a path inside one workspace directory and opens it without
following links; ``runtime.fileops`` works on what it resolved. Each test here plants what
untrusted code could plant (``..``, absolute paths, links to files and directories outside,
a link swapped in after the path was resolved, FIFOs, device nodes) and asserts that the
line is not crossed: the outside stays unread and unchanged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hopx_async.local.errors import ApiError
from hopx_async.local.runtime import fileops
from hopx_async.local.runtime.workspace import open_regular, resolve


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``(workspace, outside)``: a workspace, and a secret beside it."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (workspace / "inside.txt").write_text("inside")
    return workspace, outside


def refused(error: pytest.ExceptionInfo[ApiError], status: int = 403) -> bool:
    return error.value.status == status


def not_opened(error: pytest.ExceptionInfo[ApiError]) -> bool:
    """A directory swapped for a link fails its strict open: ``O_NOFOLLOW`` answers ELOOP
    (403) or, with ``O_DIRECTORY``, ENOTDIR (400); either way nothing was opened."""
    return error.value.status in (400, 403)


@pytest.mark.parametrize(
    "value",
    [
        "..",
        "../outside/secret",
        "a/../../outside/secret",
        "./../outside",
        "/workspace/../outside/secret",
        "/workspace/../../etc/passwd",
        "/etc/passwd",
        "/",
        "/workspacex/secret",
        "/tmp",
    ],
)
def test_dot_dot_and_absolute_paths_outside_are_refused(
    tree: tuple[Path, Path], value: str
) -> None:
    workspace, _ = tree
    with pytest.raises(ApiError) as error:
        resolve(workspace, value)
    assert refused(error), error.value.message
    assert error.value.code == "PATH_FORBIDDEN"


@pytest.mark.parametrize(
    ("value", "inside"),
    [
        ("inside.txt", "/workspace/inside.txt"),
        ("/workspace/inside.txt", "/workspace/inside.txt"),
        ("a/../inside.txt", "/workspace/inside.txt"),
        ("/workspace", "/workspace"),
        (".", "/workspace"),
        ("new/dir/file", "/workspace/new/dir/file"),
    ],
)
def test_paths_inside_resolve_to_the_sandboxs_view(
    tree: tuple[Path, Path], value: str, inside: str
) -> None:
    workspace, _ = tree
    assert resolve(workspace, value).inside == inside


def test_empty_and_nul_paths_are_bad_requests(tree: tuple[Path, Path]) -> None:
    workspace, _ = tree
    for value in ("", "a\x00b"):
        with pytest.raises(ApiError) as error:
            resolve(workspace, value)
        assert refused(error, 400)


@pytest.mark.parametrize("absolute", [True, False])
def test_a_file_link_leading_outside_is_refused(tree: tuple[Path, Path], absolute: bool) -> None:
    workspace, outside = tree
    target = str(outside / "secret") if absolute else "../outside/secret"
    (workspace / "link").symlink_to(target)
    with pytest.raises(ApiError) as error:
        resolve(workspace, "link")
    assert refused(error)


@pytest.mark.parametrize("absolute", [True, False])
def test_a_directory_link_leading_outside_is_refused(
    tree: tuple[Path, Path], absolute: bool
) -> None:
    workspace, outside = tree
    (workspace / "dir").symlink_to(str(outside) if absolute else "../outside")
    for value in ("dir/secret", "dir", "/workspace/dir/new-file"):
        with pytest.raises(ApiError) as error:
            resolve(workspace, value)
        assert refused(error), value


def test_a_link_chain_that_ends_outside_is_refused(tree: tuple[Path, Path]) -> None:
    workspace, outside = tree
    (workspace / "sub").mkdir()
    (workspace / "sub" / "up").symlink_to("..")  # still inside
    (workspace / "sub" / "up2").symlink_to("up/..")  # one level above the workspace
    assert resolve(workspace, "sub/up/inside.txt").inside == "/workspace/inside.txt"
    with pytest.raises(ApiError) as error:
        resolve(workspace, "sub/up2/outside/secret")
    assert refused(error)
    assert (outside / "secret").read_text() == "secret"


def test_links_inside_the_sandboxs_view_are_followed_inside(tree: tuple[Path, Path]) -> None:
    workspace, _ = tree
    (workspace / "abs").symlink_to("/workspace/inside.txt")
    (workspace / "host").symlink_to(str(workspace / "inside.txt"))
    assert resolve(workspace, "abs").inside == "/workspace/inside.txt"
    assert resolve(workspace, "host").inside == "/workspace/inside.txt"
    assert fileops.read_text(resolve(workspace, "abs")) == ("inside", 6)


def test_a_link_loop_is_refused(tree: tuple[Path, Path]) -> None:
    workspace, _ = tree
    (workspace / "a").symlink_to("b")
    (workspace / "b").symlink_to("a")
    with pytest.raises(ApiError) as error:
        resolve(workspace, "a")
    assert refused(error, 400)


def test_a_file_swapped_for_a_link_after_resolving_is_not_followed(
    tree: tuple[Path, Path],
) -> None:
    workspace, outside = tree
    target = resolve(workspace, "inside.txt")
    (workspace / "inside.txt").unlink()
    (workspace / "inside.txt").symlink_to(outside / "secret")
    with pytest.raises(ApiError) as error:
        fileops.read_text(target)
    assert refused(error)
    with pytest.raises(ApiError) as error:
        fileops.write(target, b"overwritten", 0o644, overwrite=True, owner=None)
    assert refused(error)
    assert (outside / "secret").read_text() == "secret"


def test_a_directory_swapped_for_a_link_after_resolving_is_not_followed(
    tree: tuple[Path, Path],
) -> None:
    workspace, outside = tree
    (workspace / "dir").mkdir()
    target = resolve(workspace, "dir/secret")
    new = resolve(workspace, "dir/new-file")
    listed = resolve(workspace, "dir")
    deeper = resolve(workspace, "dir/x")
    (workspace / "dir").rmdir()
    (workspace / "dir").symlink_to(outside)
    for attempt in (
        lambda: fileops.read_text(target),
        lambda: fileops.write(new, b"planted", 0o644, overwrite=True, owner=None),
        lambda: fileops.listing(listed),
        lambda: fileops.remove(target),
        lambda: fileops.make_dirs(deeper, owner=None),
    ):
        with pytest.raises(ApiError) as error:
            attempt()
        assert not_opened(error), error.value.message
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "secret"


def test_removing_a_link_removes_the_link_not_its_target(tree: tuple[Path, Path]) -> None:
    workspace, outside = tree
    (workspace / "link").symlink_to(outside)
    fileops.remove(resolve(workspace, "link", follow_last=False))
    assert not (workspace / "link").is_symlink()
    assert (outside / "secret").exists()


def test_removing_a_tree_never_follows_links_planted_in_it(tree: tuple[Path, Path]) -> None:
    workspace, outside = tree
    (workspace / "t" / "deep").mkdir(parents=True)
    (workspace / "t" / "deep" / "to-dir").symlink_to(outside)
    (workspace / "t" / "to-file").symlink_to(outside / "secret")
    fileops.remove(resolve(workspace, "t"))
    assert not (workspace / "t").exists()
    assert (outside / "secret").read_text() == "secret"


def test_the_workspace_itself_is_never_removed(tree: tuple[Path, Path]) -> None:
    workspace, _ = tree
    for value in ("/workspace", ".", "a/.."):
        with pytest.raises(ApiError) as error:
            fileops.remove(resolve(workspace, value, follow_last=False))
        assert refused(error, 400)
    assert workspace.is_dir()


def test_a_fifo_is_refused_without_blocking(tree: tuple[Path, Path]) -> None:
    workspace, _ = tree
    os.mkfifo(workspace / "fifo")
    target = resolve(workspace, "fifo")
    with pytest.raises(ApiError) as error:
        fileops.read_text(target)  # would block forever on a blocking open
    assert refused(error, 400)
    assert "not a regular file" in error.value.message
    with pytest.raises(ApiError) as error:
        fileops.write(target, b"x", 0o644, overwrite=True, owner=None)
    assert refused(error, 400)
    assert stat.S_ISFIFO(os.lstat(workspace / "fifo").st_mode)


def test_a_device_node_is_refused(tree: tuple[Path, Path]) -> None:
    workspace, _ = tree
    try:
        os.mknod(workspace / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs privileges")
    with pytest.raises(ApiError) as error, open_regular(resolve(workspace, "null"), os.O_RDONLY):
        pass
    assert refused(error, 400)
    with pytest.raises(ApiError) as error:
        fileops.write(resolve(workspace, "null"), b"x", 0o644, overwrite=True, owner=None)
    assert refused(error, 400)


def test_a_directory_is_no_file(tree: tuple[Path, Path]) -> None:
    workspace, _ = tree
    (workspace / "d").mkdir()
    with pytest.raises(ApiError) as error:
        fileops.read_text(resolve(workspace, "d"))
    assert refused(error, 400)


def test_an_upload_is_never_placed_through_a_link(tree: tuple[Path, Path]) -> None:
    workspace, outside = tree
    staging = workspace.parent / "staging"
    staging.mkdir()
    (staging / "up").write_text("uploaded")
    (workspace / "dir").mkdir()
    target = resolve(workspace, "dir/file")
    (workspace / "dir").rmdir()
    (workspace / "dir").symlink_to(outside)
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ApiError) as error:
            fileops.place(fd, "up", target, owner=None)
    finally:
        os.close(fd)
    assert not_opened(error)
    assert sorted(os.listdir(outside)) == ["secret"]
