"""unit: systemd.syntax(7) parsing, safe rendering, quoting, the effective unit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ollama_ops.errors import ConfigError, UnitSyntaxError, UnsafeValueError
from ollama_ops.unitfile import directives, envfile, inroot
from ollama_ops.unitfile import effective as effective_mod
from ollama_ops.unitfile import syntax as unit
from ollama_ops.unitfile.effective import EffectiveUnit
from ollama_ops.unitfile.syntax import Assignment


def triples(text: str) -> list[tuple[str, str, str]]:
    return [(a.section, a.key, a.value) for a in unit.parse(text).assignments]


# --------------------------------------------------------------- parsing


def test_parse_sections_keys_values_and_lines() -> None:
    text = "[Unit]\nDescription=Ollama\n\n[Service]\nExecStart=/usr/bin/ollama serve\n"
    f = unit.parse(text, "/etc/systemd/system/ollama.service")
    assert f.sections == ("Unit", "Service")
    assert f.assignments[1] == Assignment(
        "Service", "ExecStart", "/usr/bin/ollama serve", "/etc/systemd/system/ollama.service", 5
    )
    assert f.get("Service", "ExecStart") == ["/usr/bin/ollama serve"]
    assert f.get("Service", "Nope") == []


def test_comments_only_when_leading() -> None:
    text = "# top\n; also\n[Service]\n   # indented comment\n\t; tab comment\nA=x # not a comment\nB=;y\n"
    assert triples(text) == [("Service", "A", "x # not a comment"), ("Service", "B", ";y")]


def test_whitespace_around_equals_and_value_is_stripped() -> None:
    assert triples("[S]\n  Key   =   some value \t\n") == [("S", "Key", "some value")]


def test_only_systemd_blanks_are_stripped() -> None:
    # U+00A0 is not in systemd's WHITESPACE: it stays part of the value.
    assert triples("[S]\nK=\u00a0x\u00a0\n") == [("S", "K", "\u00a0x\u00a0")]


def test_empty_value_is_kept() -> None:
    assert triples("[Service]\nExecStart=\n") == [("Service", "ExecStart", "")]


def test_value_may_contain_equals_and_brackets() -> None:
    assert triples("[S]\nEnvironment=A=b=[c]\n") == [("S", "Environment", "A=b=[c]")]


def test_continuation_joins_lines_with_a_space() -> None:
    text = "[Service]\nExecStart=/bin/ollama \\\n  serve \\\n  --flag\nNext=1\n"
    f = unit.parse(text)
    assert f.assignments[0].value == "/bin/ollama    serve    --flag"
    assert f.assignments[0].line == 2
    assert f.assignments[1].line == 5


def test_comment_lines_inside_a_continuation_are_skipped() -> None:
    text = "[S]\nK=a \\\n# comment\n; other\n b\n"
    assert triples(text) == [("S", "K", "a   b")]


def test_empty_line_ends_a_continuation() -> None:
    assert triples("[S]\nK=a\\\n\nL=1\n") == [("S", "K", "a"), ("S", "L", "1")]


def test_escaped_backslash_does_not_continue() -> None:
    assert triples("[S]\nK=a\\\\\nL=1\n") == [("S", "K", "a\\\\"), ("S", "L", "1")]
    assert triples("[S]\nK=a\\\\\\\nb\n") == [("S", "K", "a\\\\ b")]


def test_blank_after_backslash_does_not_continue() -> None:
    assert triples("[S]\nK=a\\ \nL=1\n") == [("S", "K", "a\\"), ("S", "L", "1")]


def test_continuation_at_end_of_file() -> None:
    assert triples("[S]\nK=a\\") == [("S", "K", "a")]


def test_line_endings_and_bom() -> None:
    assert triples("\ufeff[S]\r\nA=1\r\nB=2\rC=3\0D=4") == [
        ("S", "A", "1"),
        ("S", "B", "2"),
        ("S", "C", "3"),
        ("S", "D", "4"),
    ]


def test_unknown_sections_and_keys_are_kept() -> None:
    f = unit.parse("[X-Vendor]\nWhatever=1\n[Service]\nFooBar=2\n")
    assert f.sections == ("X-Vendor", "Service")
    assert len(f.assignments) == 2


def test_repeated_section_is_listed_once() -> None:
    f = unit.parse("[A]\nx=1\n[B]\ny=2\n[A]\nz=3\n")
    assert f.sections == ("A", "B")
    assert [a.section for a in f.assignments] == ["A", "B", "A"]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("Key=1\n[S]\n", 1, "before any"),
        ("[S]\nno equals here\n", 2, "missing '='"),
        ("[S]\n\n=value\n", 3, "missing key"),
        ("[S]\n[Broken\n", 2, "section header"),
        ("[S]\n[]\n", 2, "section header"),
        ("[S]\nA=1\n[Service] # trailing\n", 3, "section header"),
    ],
)
def test_syntax_errors_name_path_and_line(text: str, line: int, what: str) -> None:
    with pytest.raises(UnitSyntaxError, match=what) as info:
        unit.parse(text, "/etc/x.service")
    message = str(info.value)
    assert message.startswith(f"/etc/x.service:{line}: ")
    assert "\n" not in message


def test_syntax_error_line_of_a_continued_line() -> None:
    with pytest.raises(UnitSyntaxError, match=r"^f:2: missing '='"):
        unit.parse("[S]\nfoo \\\nbar\n", "f")


# ------------------------------------------------------------- rendering


def test_render_layout() -> None:
    text = unit.render(
        [("Unit", [("Description", "Ollama")]), ("Service", [("ExecStart", ""), ("X", "1")])],
        header=["written by a tool", ""],
    )
    assert text == (
        "# written by a tool\n#\n\n[Unit]\nDescription=Ollama\n\n[Service]\nExecStart=\nX=1\n"
    )


def test_render_without_header_or_sections() -> None:
    assert unit.render([("Service", [("A", "b")])]) == "[Service]\nA=b\n"
    assert unit.render([]) == ""


@pytest.mark.parametrize(
    "value",
    [
        "a\nExecStartPre=/bin/evil",
        "a\r[Service]",
        "a\0b",
        "tab\there",
        "bell\x07",
        "del\x7f",
        "nel\x85",
        "ends with \\",
        " leading",
        "trailing ",
    ],
)
def test_render_refuses_unsafe_values(value: str) -> None:
    with pytest.raises(UnsafeValueError, match=r"Service\.ExecStart=") as info:
        unit.render([("Service", [("ExecStart", value)])])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["", "Exec Start", "A=B", "1Key", "K\n", "Ké", "[S]", "_k"])
def test_render_refuses_bad_keys(key: str) -> None:
    with pytest.raises(UnsafeValueError, match="key name"):
        unit.render([("Service", [(key, "1")])])


@pytest.mark.parametrize("section", ["", "Ser vice", "S]", "S\n", "1S", "X_Y"])
def test_render_refuses_bad_sections(section: str) -> None:
    with pytest.raises(UnsafeValueError, match="section name"):
        unit.render([(section, [])])


def test_render_refuses_header_that_escapes_its_comment() -> None:
    with pytest.raises(UnsafeValueError, match="header"):
        unit.render([], header=["ok\n[Service]\nExecStart=/bin/evil"])


def test_escape_specifiers() -> None:
    assert unit.escape_specifiers("100%") == "100%%"
    assert unit.escape_specifiers("%i and %%") == "%%i and %%%%"
    assert unit.escape_specifiers("plain") == "plain"


# ------------------------------------------------------ environment quoting


def test_quote_environment_escapes() -> None:
    assert unit.quote_environment("A", 'x"y') == '"A=x\\"y"'
    assert unit.quote_environment("A", "back\\slash") == '"A=back\\\\slash"'
    assert unit.quote_environment("A", "50%") == '"A=50%%"'
    assert unit.quote_environment("_B1", "") == '"_B1="'


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A B", "A=B", "Ä"])
def test_quote_environment_refuses_bad_names(name: str) -> None:
    with pytest.raises(UnsafeValueError, match="environment variable name"):
        unit.quote_environment(name, "x")


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b", "a\tb"])
def test_quote_environment_refuses_control_chars(value: str) -> None:
    with pytest.raises(UnsafeValueError, match="control character"):
        unit.quote_environment("A", value)


# --------------------------------------------------------- word splitting


def test_split_words_man_page_examples() -> None:
    # Both from systemd.service(5), "Command lines".
    assert unit.split_words("\"ONE=one\" 'TWO=two two'") == ["ONE=one", "TWO=two two"]
    assert unit.split_words("ONE='one' \"TWO='two two' too\" THREE=") == [
        "ONE=one",
        "TWO='two two' too",
        "THREE=",
    ]


def test_split_words_quotes_mid_word_and_blanks() -> None:
    assert unit.split_words('  a"b c"d \t e ') == ["ab cd", "e"]
    assert unit.split_words("") == []
    assert unit.split_words('""') == [""]


def test_split_words_escapes() -> None:
    assert unit.split_words(r"a\sb \x41 \101 \u00e9 'q\'q' \\") == [
        "a b",
        "A",
        "A",
        "é",
        "q'q",
        "\\",
    ]
    assert unit.split_words(r"\xc3\xa9") == ["é"]
    assert unit.split_words(r'"tab\there"') == ["tab\there"]


@pytest.mark.parametrize(
    "value", ['"open', "'open", "a\\", r"\q", r"\x0", r"\x00", r"\000", r"\u12"]
)
def test_split_words_errors(value: str) -> None:
    with pytest.raises(UnitSyntaxError, match="cannot split"):
        unit.split_words(value)


def test_parse_environment_order_reset_and_percent() -> None:
    env = unit.parse_environment(
        ["A=1 B=2", '"C=three four"', "A=5", "", "D=4", "E=50%% F=%i", "not-an-assignment G=7"]
    )
    assert env == {"D": "4", "E": "50%", "F": "%i", "G": "7"}


def test_parse_environment_keeps_words_before_a_syntax_error() -> None:
    assert unit.parse_environment(['A=1 "B=2']) == {"A": "1"}


# ---------------------------------------------------------- properties

_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,12}", fullmatch=True)
_SAFE_VALUES = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=40).filter(
    lambda v: v == v.strip(" ") and not v.endswith("\\")
)
_SECTIONS = st.lists(
    st.tuples(_NAMES, st.lists(st.tuples(_NAMES, _SAFE_VALUES), max_size=6)), max_size=5
).filter(  # keys of the directive table must also fit their grammar; that has its own tests
    lambda sections: (
        not any(
            directives.lookup(k) is not None and directives.DIRECTIVES[k].accepted_in(s) is not None
            for s, entries in sections
            for k, _v in entries
        )
    )
)
_HOSTILE = st.text(
    alphabet=st.one_of(
        st.sampled_from(
            ["\n", "\r", "\0", "\\", "[", "]", "=", "#", ";", "%", " ", '"', "'", "\t"]
        ),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)


@given(_SECTIONS, st.lists(_SAFE_VALUES, max_size=3))
def test_render_parse_round_trip(
    sections: list[tuple[str, list[tuple[str, str]]]], header: list[str]
) -> None:
    expected = [(s, k, v) for s, entries in sections for k, v in entries]
    assert triples(unit.render(sections, header=header)) == expected


@given(_HOSTILE)
@example("a\\\nExecStartPre=/bin/evil")
@example("x\n[Service]\nUser=root")
@example("ok \\")
@example("#comment")
@example("[Install]")
@example("%i%%")
def test_render_either_refuses_or_keeps_exactly_one_value(value: str) -> None:
    try:
        text = unit.render([("Service", [("Environment", value), ("After", "b")])])
    except UnsafeValueError:
        return
    assert triples(text) == [("Service", "Environment", value), ("Service", "After", "b")]


@given(_HOSTILE)
def test_render_either_refuses_or_keeps_exactly_one_key(key: str) -> None:
    try:
        text = unit.render([("Service", [(key, "v")])])
    except UnsafeValueError:
        return
    assert triples(text) == [("Service", key, "v")]


@given(st.lists(_HOSTILE, max_size=3))
def test_header_never_adds_assignments(header: list[str]) -> None:
    try:
        text = unit.render([("Service", [("A", "1")])], header=header)
    except UnsafeValueError:
        return
    assert triples(text) == [("Service", "A", "1")]


_ENV_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
_ENV_VALUES = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=40)


@given(_ENV_NAMES, _ENV_VALUES)
@example("A", 'x" B="y')
@example("A", "\\")
@example("A", "%i %% $HOME ${X}")
@example("A", "it's")
def test_quote_environment_round_trips(name: str, value: str) -> None:
    quoted = unit.quote_environment(name, value)
    assert unit.parse_environment([quoted]) == {name: value}
    assert len(unit.split_words(quoted)) == 1
    # Through a rendered unit file too, as systemd would read it.
    text = unit.render([("Service", [("Environment", quoted)])])
    assert unit.parse_environment(unit.parse(text).get("Service", "Environment")) == {name: value}


@given(_ENV_NAMES, st.text(max_size=20))
def test_quote_environment_refuses_or_round_trips(name: str, value: str) -> None:
    try:
        quoted = unit.quote_environment(name, value)
    except UnsafeValueError:
        return
    assert unit.parse_environment([quoted]) == {name: value}


# ------------------------------------------------------ effective unit


def _a(section: str, key: str, value: str, line: int = 1) -> Assignment:
    return Assignment(section, key, value, "/f", line)


def test_values_reset_on_empty_and_last_wins() -> None:
    eu = EffectiveUnit(
        "x.service",
        "/f",
        (),
        (
            _a("Service", "ExecStart", "/a", 1),
            _a("Service", "ExecStart", "", 2),
            _a("Service", "ExecStart", "/b", 3),
            _a("Service", "Restart", "always", 4),
            _a("Service", "Restart", "on-failure", 5),
            _a("Service", "Nice", "5", 6),
            _a("Service", "Nice", "", 7),
        ),
        masked=False,
    )
    assert [a.value for a in eu.values("Service", "ExecStart")] == ["/b"]
    last = eu.last("Service", "Restart")
    assert last is not None
    assert last.value == "on-failure"
    assert last.line == 5
    assert eu.last("Service", "Nice") is None
    assert eu.last("Service", "Missing") is None
    assert eu.values("Service", "Missing") == []


def test_dependencies_are_not_reset_by_an_empty_assignment() -> None:
    eu = EffectiveUnit(
        "x.service",
        "/f",
        (),
        (_a("Unit", "After", "a.target"), _a("Unit", "After", ""), _a("Unit", "After", "b")),
        masked=False,
    )
    assert [a.value for a in eu.values("Unit", "After")] == ["a.target", "b"]


def write(root: Path, inside: str, text: str) -> Path:
    path = root / inside.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def link(root: Path, inside: str, target: str) -> None:
    path = root / inside.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_search_path_order(tmp_path: Path) -> None:
    rel = [p.relative_to(tmp_path).as_posix() for p in effective_mod.unit_search_path(tmp_path)]
    assert rel == [
        "etc/systemd/system.control",
        "run/systemd/system.control",
        "run/systemd/transient",
        "run/systemd/generator.early",
        "etc/systemd/system",
        "etc/systemd/system.attached",
        "run/systemd/system",
        "run/systemd/system.attached",
        "run/systemd/generator",
        "usr/local/lib/systemd/system",
        "usr/lib/systemd/system",
        "lib/systemd/system",
        "run/systemd/generator.late",
    ]


@pytest.mark.parametrize("target", ["usr/lib", "/usr/lib"])
def test_search_path_drops_lib_when_it_links_to_usr_lib(tmp_path: Path, target: str) -> None:
    (tmp_path / "usr/lib/systemd/system").mkdir(parents=True)
    os.symlink(target, tmp_path / "lib")
    rel = [p.relative_to(tmp_path).as_posix() for p in effective_mod.unit_search_path(tmp_path)]
    assert "lib/systemd/system" not in rel
    assert "usr/lib/systemd/system" in rel


def test_fragment_takes_the_highest_priority_dir(tmp_path: Path) -> None:
    write(tmp_path, "/usr/lib/systemd/system/ollama.service", "[Service]\nExecStart=/usr/a\n")
    write(tmp_path, "/etc/systemd/system/ollama.service", "[Service]\nExecStart=/etc/a\n")
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    assert eu.fragment == "/etc/systemd/system/ollama.service"
    assert not eu.masked
    assert [a.value for a in eu.values("Service", "ExecStart")] == ["/etc/a"]
    assert eu.assignments[0].path == "/etc/systemd/system/ollama.service"


def test_dropins_sorted_by_name_across_dirs_and_masked_by_name(tmp_path: Path) -> None:
    write(tmp_path, "/usr/lib/systemd/system/ollama.service", "[Service]\nNice=0\nUser=ollama\n")
    write(
        tmp_path, "/usr/lib/systemd/system/ollama.service.d/10-vendor.conf", "[Service]\nNice=1\n"
    )
    write(tmp_path, "/usr/lib/systemd/system/ollama.service.d/50-same.conf", "[Service]\nNice=9\n")
    write(tmp_path, "/etc/systemd/system/ollama.service.d/50-same.conf", "[Service]\nNice=5\n")
    write(tmp_path, "/run/systemd/system/ollama.service.d/20-run.conf", "[Service]\nNice=2\n")
    write(tmp_path, "/etc/systemd/system/ollama.service.d/README", "not a drop-in")
    write(tmp_path, "/etc/systemd/system/ollama.service.d/.hidden.conf", "[Service]\nNice=7\n")
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    assert eu.dropins == (
        "/usr/lib/systemd/system/ollama.service.d/10-vendor.conf",
        "/run/systemd/system/ollama.service.d/20-run.conf",
        "/etc/systemd/system/ollama.service.d/50-same.conf",
    )
    assert [a.value for a in eu.values("Service", "Nice")] == ["0", "1", "2", "5"]
    last = eu.last("Service", "Nice")
    assert last is not None
    assert last.value == "5"


def test_dropin_masked_by_dev_null_or_empty_file(tmp_path: Path) -> None:
    write(tmp_path, "/usr/lib/systemd/system/ollama.service", "[Service]\nUser=ollama\n")
    write(tmp_path, "/usr/lib/systemd/system/ollama.service.d/a.conf", "[Service]\nNice=1\n")
    write(tmp_path, "/usr/lib/systemd/system/ollama.service.d/b.conf", "[Service]\nNice=2\n")
    link(tmp_path, "/etc/systemd/system/ollama.service.d/a.conf", "/dev/null")
    write(tmp_path, "/etc/systemd/system/ollama.service.d/b.conf", "")
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    assert eu.dropins == ()
    assert eu.values("Service", "Nice") == []


def test_type_level_and_dash_prefix_dropins(tmp_path: Path) -> None:
    write(tmp_path, "/etc/systemd/system/ollama-gpu-a.service", "[Service]\nUser=ollama\n")
    write(tmp_path, "/usr/lib/systemd/system/service.d/10-all.conf", "[Service]\nA=1\n")
    write(tmp_path, "/etc/systemd/system/ollama-.service.d/20-prefix.conf", "[Service]\nB=1\n")
    write(tmp_path, "/etc/systemd/system/ollama-gpu-.service.d/30-prefix.conf", "[Service]\nC=1\n")
    write(tmp_path, "/etc/systemd/system/ollama-gpu-a.service.d/40-own.conf", "[Service]\nD=1\n")
    # Same file name in the unit's own dir and in service.d: the unit's own wins.
    write(tmp_path, "/etc/systemd/system/service.d/40-own.conf", "[Service]\nE=1\n")
    eu = effective_mod.load_effective(tmp_path, "ollama-gpu-a.service")
    assert eu.dropins == (
        "/usr/lib/systemd/system/service.d/10-all.conf",
        "/etc/systemd/system/ollama-.service.d/20-prefix.conf",
        "/etc/systemd/system/ollama-gpu-.service.d/30-prefix.conf",
        "/etc/systemd/system/ollama-gpu-a.service.d/40-own.conf",
    )
    assert [a.key for a in eu.assignments[1:]] == ["A", "B", "C", "D"]


def test_instance_falls_back_to_template_and_its_dropins(tmp_path: Path) -> None:
    write(
        tmp_path,
        "/etc/systemd/system/ollama@.service",
        "[Service]\nEnvironmentFile=/etc/ollama/%i.conf\n",
    )
    write(tmp_path, "/etc/systemd/system/ollama@.service.d/10-all.conf", "[Service]\nNice=1\n")
    write(tmp_path, "/etc/systemd/system/ollama@gpu0.service.d/20-one.conf", "[Service]\nNice=2\n")
    write(
        tmp_path, "/etc/systemd/system/ollama@gpu1.service.d/20-other.conf", "[Service]\nNice=3\n"
    )
    eu = effective_mod.load_effective(tmp_path, "ollama@gpu0.service")
    assert eu.fragment == "/etc/systemd/system/ollama@.service"
    assert eu.dropins == (
        "/etc/systemd/system/ollama@.service.d/10-all.conf",
        "/etc/systemd/system/ollama@gpu0.service.d/20-one.conf",
    )


def test_instance_file_beats_template_in_any_dir(tmp_path: Path) -> None:
    write(tmp_path, "/etc/systemd/system/ollama@.service", "[Service]\nUser=template\n")
    write(tmp_path, "/usr/lib/systemd/system/ollama@gpu0.service", "[Service]\nUser=instance\n")
    eu = effective_mod.load_effective(tmp_path, "ollama@gpu0.service")
    assert eu.fragment == "/usr/lib/systemd/system/ollama@gpu0.service"


@pytest.mark.parametrize("how", ["dev-null", "empty"])
def test_masked_unit(tmp_path: Path, how: str) -> None:
    write(tmp_path, "/usr/lib/systemd/system/ollama.service", "[Service]\nUser=ollama\n")
    write(tmp_path, "/usr/lib/systemd/system/ollama.service.d/a.conf", "[Service]\nNice=1\n")
    if how == "dev-null":
        link(tmp_path, "/etc/systemd/system/ollama.service", "/dev/null")
    else:
        write(tmp_path, "/etc/systemd/system/ollama.service", "")
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    assert eu.masked
    assert eu.fragment == "/etc/systemd/system/ollama.service"
    assert eu.assignments == ()
    assert eu.dropins == ()


def test_masked_template_masks_instances(tmp_path: Path) -> None:
    link(tmp_path, "/etc/systemd/system/ollama@.service", "/dev/null")
    assert effective_mod.load_effective(tmp_path, "ollama@gpu0.service").masked


def test_no_fragment_still_reports_dropins(tmp_path: Path) -> None:
    write(tmp_path, "/etc/systemd/system/ollama.service.d/override.conf", "[Service]\nNice=1\n")
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    assert eu.fragment is None
    assert not eu.masked
    assert eu.dropins == ("/etc/systemd/system/ollama.service.d/override.conf",)


def test_absolute_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    write(tmp_path, "/opt/ollama/ollama.service", "[Service]\nUser=linked\n")
    link(tmp_path, "/etc/systemd/system/ollama.service", "/opt/ollama/ollama.service")
    write(tmp_path, "/opt/ollama/extra.conf", "[Service]\nNice=3\n")
    link(tmp_path, "/etc/systemd/system/ollama.service.d/extra.conf", "/opt/ollama/extra.conf")
    link(tmp_path, "/etc/systemd/system/ollama.service.d/dangling.conf", "/nowhere.conf")
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    user = eu.last("Service", "User")
    assert user is not None
    assert user.value == "linked"
    assert eu.dropins == ("/etc/systemd/system/ollama.service.d/extra.conf",)


def test_nothing_installed(tmp_path: Path) -> None:
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    assert eu == EffectiveUnit("ollama.service", None, (), (), masked=False)


def test_syntax_error_in_a_dropin_names_the_file_inside_root(tmp_path: Path) -> None:
    write(tmp_path, "/etc/systemd/system/ollama.service", "[Service]\nUser=ollama\n")
    write(tmp_path, "/etc/systemd/system/ollama.service.d/bad.conf", "[Service]\noops\n")
    with pytest.raises(UnitSyntaxError, match=r"^/etc/systemd/system/ollama.service.d/bad.conf:2:"):
        effective_mod.load_effective(tmp_path, "ollama.service")


def test_undecodable_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "etc/systemd/system/ollama.service"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"[Service]\nUser=\xff\n")
    with pytest.raises(UnitSyntaxError, match="not valid UTF-8"):
        effective_mod.load_effective(tmp_path, "ollama.service")


def test_unreadable_file_is_a_read_error(tmp_path: Path) -> None:
    # A directory where the fragment's target should be: reading it fails.
    (tmp_path / "opt/dir.service").mkdir(parents=True)
    link(tmp_path, "/etc/systemd/system/ollama.service.d/x.conf", "/opt/dir.service")
    write(tmp_path, "/etc/systemd/system/ollama.service", "[Service]\nUser=ollama\n")
    # A directory is not a drop-in file, so it is skipped rather than read.
    assert effective_mod.load_effective(tmp_path, "ollama.service").dropins == ()
    with pytest.raises(unit.UnitReadError, match="cannot read"):
        effective_mod._read(tmp_path, "/opt/dir.service")


@pytest.mark.parametrize("name", ["", "ollama", "../x.service", "a/b.service", ".service"])
def test_invalid_unit_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid unit name"):
        effective_mod.load_effective(tmp_path, name)


def test_seed_guide_layout_end_to_end(tmp_path: Path) -> None:
    from tests.helpers import INSTALLER_UNIT

    write(tmp_path, "/etc/systemd/system/ollama.service", INSTALLER_UNIT)
    rendered = unit.render(
        [
            ("Unit", [("After", "nvidia-persistenced.service")]),
            (
                "Service",
                [
                    ("Environment", ""),
                    ("Environment", unit.quote_environment("OLLAMA_HOST", "127.0.0.1:11434")),
                    ("Restart", "on-failure"),
                ],
            ),
        ]
    )
    write(tmp_path, "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf", rendered)
    eu = effective_mod.load_effective(tmp_path, "ollama.service")
    env = unit.parse_environment([a.value for a in eu.assignments if a.key == "Environment"])
    assert env == {"OLLAMA_HOST": "127.0.0.1:11434"}
    restart = eu.last("Service", "Restart")
    assert restart is not None
    assert restart.value == "on-failure"
    assert [a.value for a in eu.values("Unit", "After")] == [
        "network-online.target",
        "nvidia-persistenced.service",
    ]


# ------------------------------------------- EnvironmentFile= grammar (issue 7, item 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB = two \n", [("A", "1"), ("B", "two")]),
        ("A='x y'\n", [("A", "x y")]),
        ('A="a \\"b\\" \\$c \\q"\n', [("A", 'a "b" $c \\q')]),
        ("A='multi\nline'\nB=2\n", [("A", "multi\nline"), ("B", "2")]),
        ("A=\"x\"y'z' \n", [("A", "xy'z'")]),  # quotes only open before unquoted text
        ("A=\"x\" 'y'\n", [("A", "xy")]),
        ("A=one\\\ntwo\n", [("A", "onetwo")]),
        ("A=x\\ \n", [("A", "x ")]),
        ("# c\n; c\n  #A=1\nB=2\n", [("B", "2")]),
        ("#c\\\nA=1\n", [("A", "1")]),
        ("export A=1\n1A=2\nA-B=3\nnoequals\nC=\n", [("C", "")]),
        ("A=1\r\nB=2\r\n", [("A", "1"), ("B", "2")]),
        ("A=1\0B=2\n", [("A", "1")]),
        ("A=1\nA=2\n", [("A", "1"), ("A", "2")]),
        ("A='unterminated", [("A", "unterminated")]),
    ],
)
def test_env_file_grammar_matches_systemd(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(k, v) for _line, k, v in envfile.parse(text)] == expected


def test_env_file_lines_are_where_each_assignment_starts() -> None:
    text = "A='x\ny'\n\n# c\nB=1\\\n2\nC=3\n"
    assert [(line, k) for line, k, _v in envfile.parse(text)] == [(1, "A"), (5, "B"), (7, "C")]


def test_env_file_with_invalid_utf8_is_refused_whole() -> None:
    with pytest.raises(envfile.EnvFileError, match="line 2: invalid UTF-8"):
        envfile.parse(b"A=1\nB=\xff\n".decode("utf-8", "surrogateescape"))


_ENV_VALUE = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=20)


def _encode(value: str, style: int) -> str:
    """``value`` written the way a person might write it in an env file (not our parser's code)."""
    if style == 0 and "'" not in value:
        return f"'{value}'"
    if style == 1 or "\n" in value or "\r" in value:
        escaped = "".join("\\" + c if c in '"\\`$' else c for c in value)
        return f'"{escaped}"'
    # unquoted: every blank, quote and backslash escaped; a continuation now and then
    out = "".join("\\" + c if c in " \t\"'\\" else c for c in value)
    return out[:3] + ("\\\n" if len(out) > 3 and out[2] != "\\" else "") + out[3:]


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
            _ENV_VALUE,
            st.integers(0, 2),
            st.sampled_from(["\n", "\r\n", "\n\n# note\n", "\n; x=y\n  \n"]),
        ),
        max_size=6,
    )
)
@example([("A", "x\ny", 1, "\n")])
@example([("A", " lead and trail ", 2, "\n")])
@example([("A", "\\", 2, "\n")])
def test_env_file_round_trips_any_value(rows: list[tuple[str, str, int, str]]) -> None:
    text = "".join(f"{name}={_encode(value, style)}{end}" for name, value, style, end in rows)
    assert [(k, v) for _l, k, v in envfile.parse(text)] == [(n, v) for n, v, _s, _e in rows]


# ------------------------------------------- reading inside a root (issue 7, item 5)


def test_resolve_never_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/abs").symlink_to("/etc/passwd")
    (root / "etc/rel").symlink_to("../../../../../../etc/passwd")
    for path in ("/../../etc/passwd", "/etc/abs", "/etc/rel", "etc/../../x"):
        assert inroot.resolve(root, path).is_relative_to(root), path
    assert inroot.resolve(root, "/etc/abs") == root / "etc/passwd"


def test_read_bytes_reads_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/ok").write_text("x")
    os.mkfifo(tmp_path / "etc/fifo")
    (tmp_path / "etc/dir").mkdir()
    (tmp_path / "etc/big").write_bytes(b"x" * (inroot.MAX_READ + 1))
    (tmp_path / "etc/loop").symlink_to("loop")
    assert inroot.read_bytes(tmp_path, "/etc/ok") == b"x"
    for name, why in [
        ("fifo", "not a regular file"),
        ("dir", "not a regular file"),
        ("big", "over"),
        ("missing", "does not exist"),
        ("loop", "symbolic links"),
    ]:
        with pytest.raises(unit.UnitReadError, match=why):
            inroot.read_bytes(tmp_path, f"/etc/{name}")


def test_glob_stays_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "outside.env").write_text("x")
    root = tmp_path / "a" / "root"
    (root / "etc/ollama").mkdir(parents=True)
    (root / "etc/ollama/a.env").write_text("x")
    (root / "etc/ollama/.hidden.env").write_text("x")
    assert inroot.glob(root, "/etc/ollama/*.env") == ["/etc/ollama/a.env"]
    assert inroot.glob(root, "/../../out*.env") == []
    assert inroot.glob(root, "/etc/../../*/ollama/*.env") == ["/etc/ollama/a.env"]
