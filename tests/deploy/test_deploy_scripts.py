"""Scripts run as psql runs them: cut into statements, each on its own, errors mapped to lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from commercecore.deploy.errors import ScriptError
from commercecore.deploy.scripts import run_script, split_statements

SCRIPT = """-- Deploy x; with a semicolon in a comment
begin;
/* block ; /* nested ; */ still comment ; */
create table t (a text default 'x;y', b text default E'it\\'s;', "c;" int);
create function f() returns int language sql
begin atomic
  select case when true then 1 else 2 end;
  select 3;
end;
do $body$ begin perform 1; end $body$;
create or replace procedure p(x int) language sql begin atomic select x; end;
select $$;$$, $1;
commit;
select 'last, without a semicolon'"""


def test_statements_split_like_psql() -> None:
    statements = split_statements(SCRIPT, Path("x.sql"))
    assert [(s.line, s.text.split()[0]) for s in statements] == [
        (2, "begin;"),
        (4, "create"),
        (5, "create"),
        (10, "do"),
        (11, "create"),
        (12, "select"),
        (13, "commit;"),
        (14, "select"),
    ]
    assert statements[1].text.endswith('"c;" int);')
    assert statements[2].text.endswith("end;")
    assert statements[3].body_offset == SCRIPT.index("$body$")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("select 1;\n\nselect 'open;\n", 3, "unterminated quoted string"),
        ("select 1;\n/* no end\n", 2, "unterminated /* comment"),
        ("do $x$ begin\nend;\n", 1, "unterminated dollar-quoted string $x$"),
        ("select 1;\n\\set x 1\n", 2, "psql meta-commands"),
    ],
)
def test_unsplittable_scripts_name_the_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(ScriptError) as info:
        split_statements(text, Path("bad.sql"))
    assert info.value.line == line
    assert reason in info.value.reason


@pytest.fixture
def scratch(new_db: Callable[[], str], tmp_path: Path) -> Callable[[str], tuple[str, Path]]:
    url = new_db()

    def write(text: str) -> tuple[str, Path]:
        path = tmp_path / "script.sql"
        path.write_text(text)
        return url, path

    return write


def test_statements_outside_a_transaction_commit_one_by_one(
    scratch: Callable[[str], tuple[str, Path]],
) -> None:
    url, path = scratch("create table kept (a int);\n\ncreate table kept (a int);\n")
    with pytest.raises(ScriptError) as info:
        run_script(url, path, root=path.parent)
    assert str(info.value) == 'script.sql:3: relation "kept" already exists'
    assert info.value.sqlstate == "42P07"
    with psycopg.connect(url) as conn:
        assert conn.execute("select to_regclass('kept') is not null").fetchone() == (True,)


def test_a_failed_transaction_leaves_nothing(scratch: Callable[[str], tuple[str, Path]]) -> None:
    url, path = scratch("begin;\ncreate table gone (a int);\nselect 1/0;\ncommit;\n")
    with pytest.raises(ScriptError, match=r"script.sql:3: division by zero"):
        run_script(url, path, root=path.parent)
    with psycopg.connect(url) as conn:
        assert conn.execute("select to_regclass('gone')").fetchone() == (None,)


def test_an_open_transaction_is_rolled_back_with_a_warning(
    scratch: Callable[[str], tuple[str, Path]],
) -> None:
    url, path = scratch("begin;\ncreate table forgotten (a int);\n")
    warnings: list[str] = []
    run_script(url, path, warnings.append)
    assert warnings == ["script.sql ended inside an open transaction; it was rolled back (as psql does)"]
    with psycopg.connect(url) as conn:
        assert conn.execute("select to_regclass('forgotten')").fetchone() == (None,)


def test_errors_inside_function_bodies_point_into_the_body(
    scratch: Callable[[str], tuple[str, Path]],
) -> None:
    url, path = scratch(
        "create function g() returns int language plpgsql as $$\nbegin\n  retrun 1;\nend $$;\n"
    )
    with pytest.raises(ScriptError) as info:
        run_script(url, path)
    assert info.value.line == 3
    assert "syntax error" in info.value.reason


def test_missing_script(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match=r"nope\.sql: script not found"):
        run_script("postgresql:///unused", tmp_path / "nope.sql", root=tmp_path)
