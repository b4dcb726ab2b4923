"""The shape of the house, checked on every run: `gateway` serves HTTP and never reaches into
`commercecore`; no Python function is longer than a screen; SQL change files stay small, with functions in
procedures/, views in views/ and only trigger functions beside the tables of schema/; no PL/pgSQL body is
longer than a few screens."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 60
MAX_SQL_LINES = 300
MAX_PLPGSQL_LINES = 150
SQL_FOLDERS = ("roles", "schema", "procedures", "views")

_SQL_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_CREATE_VIEW = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?(?:materialized\s+)?view\b", re.IGNORECASE)
_CREATE_ROUTINE = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?(?:function|procedure)\b", re.IGNORECASE)
# a routine from its name to the end of its dollar-quoted body: the header (arguments, returns, language,
# options) and the body; the language may also follow the body, up to the statement's end
_ROUTINE = re.compile(
    r"\bcreate\s+(?:or\s+replace\s+)?(?:function|procedure)\s+([\w.\"]+)\s*\((.*?)\$(\w*)\$(.*?)\$\3\$([^;]*)",
    re.IGNORECASE | re.DOTALL,
)
_PLPGSQL = re.compile(r"\blanguage\s+'?plpgsql\b", re.IGNORECASE)
_RETURNS_TRIGGER = re.compile(r"\breturns\s+(?:event_)?trigger\b", re.IGNORECASE)
_LINE_COMMENT = re.compile(r"^[ \t]*--[^\n]*", re.MULTILINE)


def python_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return files


def imported_modules(source: str) -> Iterator[str]:
    """Every module an import statement names, and every literal name given to import_module/__import__."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.args[0].value


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function, nested ones included, whose def line to the last line of
    its body (docstring included, decorators not) spans more than `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def long_functions_in(package: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in python_files(package)
        for name, line, length in long_functions(path.read_text())
    ]


def sql_files() -> list[Path]:
    files = sorted(path for folder in SQL_FOLDERS for path in (ROOT / folder).rglob("*.sql"))
    assert files, "no SQL change files"
    return files


def sql_code(path: Path) -> str:
    return _SQL_COMMENT.sub(" ", path.read_text())


def routines(sql: str) -> Iterator[tuple[str, str, int, int]]:
    """(name, header, line of its create statement, lines of the body) of each routine of a script. Whole-line
    comments are blanked first (keeping the line count), so a commented-out routine is not one."""
    text = _LINE_COMMENT.sub("", sql)
    for match in _ROUTINE.finditer(text):
        name, header, _tag, body, trailer = match.groups()
        line = text.count("\n", 0, match.start()) + 1
        yield name, header + trailer, line, len(body.strip("\n").splitlines())


def long_plpgsql(sql: str, limit: int = MAX_PLPGSQL_LINES) -> list[tuple[str, int, int]]:
    """(name, line of its create statement, lines of the body) of each PL/pgSQL routine whose body,
    between its dollar quotes, is longer than `limit` lines."""
    return [
        (name, line, length)
        for name, header, line, length in routines(sql)
        if _PLPGSQL.search(header) and length > limit
    ]


# -- the checks themselves can fail ------------------------------------------------------------------


def test_the_import_check_sees_every_way_of_importing() -> None:
    source = (
        "import commercecore.cli\n"
        "from commercecore.ops import jobs\n"
        "import importlib\n"
        "importlib.import_module('commercecore.text')\n"
        "def f():\n"
        "    from commercecore import text\n"
        "from . import sibling\n"
    )
    assert list(imported_modules(source)) == [
        "commercecore.cli",
        "commercecore.ops",
        "importlib",
        "commercecore.text",
        "commercecore",
    ]


def test_the_length_check_counts_def_to_last_line() -> None:
    body = "".join(f"    x = {n}\n" for n in range(59))
    sixty_one = f'@decorator\ndef fits():\n    """doc"""\n{body}'  # the def line, the docstring, 59 more
    assert long_functions(sixty_one) == [("fits", 2, 61)]
    assert long_functions(sixty_one, limit=61) == []
    inner_body = "".join(f"            y = {n}\n" for n in range(60))
    nested = "class A:\n    def outer(self):\n        async def inner():\n" + inner_body
    assert long_functions(nested) == [("outer", 2, 62), ("inner", 3, 61)]  # both end on line 63


def test_the_sql_checks_ignore_comments() -> None:
    assert _CREATE_VIEW.search("create or replace view api.v as select 1")
    assert _CREATE_VIEW.search("CREATE MATERIALIZED VIEW ops.m as select 1")
    assert _CREATE_ROUTINE.search("create or replace function api.f() returns int")
    assert _CREATE_ROUTINE.search("create procedure p() language sql as $$ $$")
    commented = "-- create view x\n/* create function\n f() */ comment on view v is 'x';"
    assert not _CREATE_VIEW.search(_SQL_COMMENT.sub(" ", commented))
    assert not _CREATE_ROUTINE.search(_SQL_COMMENT.sub(" ", commented))


def test_the_plpgsql_check_counts_the_body_between_its_quotes() -> None:
    def routine(name: str, language: str, lines: int, tag: str = "") -> str:
        body = "".join(f"  perform {n};\n" for n in range(lines))
        header = f"create or replace function {name}(a int default 1)\nreturns void\nlanguage {language}\n"
        return f"{header}as ${tag}$\n{body}${tag}$;\n"

    script = (
        "-- create function commented(x int) returns void language plpgsql as $$\n"
        + routine("core.fits", "plpgsql", 150)
        + routine("core.long", "plpgsql", 151, tag="body")
        + routine("core.long_sql", "sql", 200)
        + "create function core.after(x int) returns int as $$ begin return x; end; $$ language plpgsql;\n"
    )
    assert long_plpgsql(script) == [("core.long", 157, 151)]
    assert long_plpgsql(script, limit=0) == [
        ("core.fits", 2, 150),
        ("core.long", 157, 151),
        ("core.after", 518, 1),
    ]
    assert [name for name, *_ in routines(script)] == [
        "core.fits",
        "core.long",
        "core.long_sql",
        "core.after",
    ]


# -- the house -----------------------------------------------------------------------------------------


def test_gateway_never_imports_commercecore() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in python_files("gateway")
        for module in imported_modules(path.read_text())
        if module == "commercecore" or module.startswith("commercecore.")
    ]
    assert offenders == []


def test_no_commercecore_function_over_60_lines() -> None:
    assert long_functions_in("commercecore") == []


def test_no_gateway_function_over_60_lines() -> None:
    assert long_functions_in("gateway") == []


def test_no_sql_change_file_over_300_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): count
        for path in sql_files()
        if (count := len(path.read_text().splitlines())) > MAX_SQL_LINES
    }
    assert long == {}


def test_views_live_in_views_and_functions_in_procedures() -> None:
    views_in_procedures = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "procedures").rglob("*.sql"))
        if _CREATE_VIEW.search(sql_code(path))
    ]
    functions_in_views = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "views").rglob("*.sql"))
        if _CREATE_ROUTINE.search(sql_code(path))
    ]
    assert (views_in_procedures, functions_in_views) == ([], [])


def test_schema_holds_no_function_but_trigger_functions() -> None:
    """A trigger function stays beside the table it serves; every other function lives in procedures/."""
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "schema").rglob("*.sql"))
        for name, header, _line, _length in routines(path.read_text())
        if not _RETURNS_TRIGGER.search(header)
    ]
    assert offenders == []


def test_no_plpgsql_function_over_150_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in sql_files()
        for name, line, length in long_plpgsql(path.read_text())
    ]
    assert long == []
