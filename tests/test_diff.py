"""The pure diff of apply: properties over generated installed and planned sets, no filesystem."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.apply.diff import Change, diff, unified

PATHS = st.sampled_from(
    [f"/etc/systemd/system/{name}" for name in ("a.service", "b.service", "a.service.d/x.conf")]
    + ["/etc/modules-load.d/m.conf", "/etc/nginx/conf.d/o.conf"]
)
TEXT = st.text(alphabet="ab=\n[]", max_size=12)


@st.composite
def states(draw: st.DrawFn) -> tuple[dict[str, bytes | None], dict[str, str], set[str]]:
    planned = draw(st.dictionaries(PATHS, TEXT, max_size=5))
    owned = draw(st.sets(PATHS, max_size=5))
    installed = {
        path: draw(st.one_of(st.none(), TEXT.map(str.encode))) for path in set(planned) | owned
    }
    return installed, planned, owned


def apply_changes(installed: dict[str, bytes | None], changes: list[Change]) -> dict[str, bytes]:
    after = {path: data for path, data in installed.items() if data is not None}
    for change in changes:
        if change.new is None:
            after.pop(change.path, None)
        else:
            after[change.path] = change.new
    return after


@given(states())
def test_applying_the_diff_gives_exactly_the_plan(
    state: tuple[dict[str, bytes | None], dict[str, str], set[str]],
) -> None:
    installed, planned, owned = state
    after = apply_changes(installed, diff(installed, planned, owned))
    for path, text in planned.items():
        assert after[path] == text.encode()
    for path in owned - set(planned):
        assert path not in after  # what we wrote and no longer plan is gone
    for path, data in installed.items():  # nothing else is touched
        if path not in planned and path not in owned and data is not None:
            assert after[path] == data


@given(states())
def test_the_diff_is_minimal_and_idempotent(
    state: tuple[dict[str, bytes | None], dict[str, str], set[str]],
) -> None:
    installed, planned, owned = state
    changes = diff(installed, planned, owned)
    assert all(change.old != change.new for change in changes)  # no no-op changes
    paths = [c.path for c in changes]
    assert len(paths) == len(set(paths))  # one change per file
    after = apply_changes(installed, changes)
    again = {path: after.get(path) for path in set(planned) | owned}
    assert diff(again, planned, owned) == []


@given(states())
def test_unified_names_every_change(
    state: tuple[dict[str, bytes | None], dict[str, str], set[str]],
) -> None:
    installed, planned, owned = state
    changes = diff(installed, planned, owned)
    text = unified(changes)
    for change in changes:
        if change.new is not None and change.new != b"":
            assert f"b{change.path}" in text
        if change.old is not None and change.old != b"":
            assert f"a{change.path}" in text
