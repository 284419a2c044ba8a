import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import loopstack as ls
from loopstack.core.errors import FilterError, ValidationError
from loopstack.core.project import Project
from loopstack.tracking.entities import Run
from loopstack.tracking.search import BoolOp, Comparison, parse_filter, parse_order_by


@pytest.fixture
def runs(project: Project) -> dict[str, str]:
    """Six runs over two experiments with known params, metrics and tags."""
    ids = {}
    for i, (lr, acc, team) in enumerate(
        [("0.01", 0.95, "x"), ("0.01", 0.85, "y"), ("0.1", 0.91, "x"), ("0.1", 0.70, "x"), ("1", 0.99, "z")]
    ):
        with ls.start_run(
            experiment="exp-a" if i < 4 else "exp-b", run_name=f"r{i}", params={"lr": lr}, tags={"team": team}
        ) as run:
            run.log_metric("acc", acc)
        ids[f"r{i}"] = run.id
    with ls.start_run(experiment="exp-a", run_name="no-acc") as run:
        run.log_param("lr", "0.01")
    ids["no-acc"] = run.id
    return ids


def names(page: list[Run]) -> list[str]:
    return [run.info.name for run in page]


def test_filter_on_metrics_params_and_tags(project: Project, runs: dict[str, str]) -> None:
    page = ls.Client(project).search_runs("metrics.acc > 0.9 and params.lr = '0.01' and tags.team = 'x'")
    assert names(page) == ["r0"]


def test_order_by_metric_with_missing_values_last(project: Project, runs: dict[str, str]) -> None:
    page = ls.Client(project).search_runs(order_by=["metrics.acc desc"], experiment_names="exp-a")
    assert names(page) == ["r0", "r2", "r1", "r3", "no-acc"]
    page = ls.Client(project).search_runs(order_by=["metrics.acc asc"], experiment_names="exp-a")
    assert names(page) == ["r3", "r1", "r2", "r0", "no-acc"]


def test_or_parentheses_in_like_and_null(project: Project, runs: dict[str, str]) -> None:
    client = ls.Client(project)
    assert set(names(client.search_runs("(tags.team = 'y' or tags.team = 'z') and metrics.acc >= 0.85"))) == {
        "r1",
        "r4",
    }
    assert set(names(client.search_runs("params.lr in ('0.1', '1')"))) == {"r2", "r3", "r4"}
    assert set(names(client.search_runs("name like 'r%' and params.lr not in ('0.1')"))) == {"r0", "r1", "r4"}
    assert names(client.search_runs("metrics.acc is null")) == ["no-acc"]
    assert set(names(client.search_runs("status = 'FINISHED' and run_name ilike 'R1'"))) == {"r1"}


LIKE_NAMES = ["Risk", "risk", "a*b", "ab", "a?b", "a[1]", "a_b", "a%b", "r1", "a\\b"]
LIKE_PATTERNS = [
    "Risk", "R%", "r%", "%isk", "a*%", "a?b", "a_b", "a[%", "a[1]", "%", "a\\%b", "a\\_b", "a\\\\b", "_", "__", "a%b",
]  # fmt: skip


def _like(pattern: str, text: str) -> bool:
    """SQL LIKE, case-sensitive, a backslash escaping the next character: the reference both backends
    must agree with."""
    regex, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            regex.append(re.escape(next(chars)))
        else:
            regex.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return re.fullmatch("".join(regex), text, flags=re.DOTALL) is not None


def test_like_is_case_sensitive_and_escapes_with_a_backslash_on_every_backend(project: Project) -> None:
    for name in LIKE_NAMES:
        with ls.start_run(experiment="like", run_name=name, params={"team": name}):
            pass
    client = ls.Client(project)
    for pattern in LIKE_PATTERNS:
        expected = {name for name in LIKE_NAMES if _like(pattern, name)}
        quoted = pattern.replace("\\", "\\\\").replace("'", "''")  # a filter's quoted text unescapes \\
        assert set(names(client.search_runs(f"params.team like '{quoted}'"))) == expected, pattern
        assert set(names(client.search_runs(f"name like '{quoted}'"))) == expected, pattern
    assert set(names(client.search_runs("params.team ilike 'R%'"))) == {"Risk", "risk", "r1"}
    assert set(names(client.search_runs("params.team ilike 'A\\_B'"))) == {"a_b"}
    with pytest.raises(FilterError, match="escape character"):
        client.search_runs("name like 'a\\\\'")


def test_paging_walks_every_run_exactly_once(project: Project, runs: dict[str, str]) -> None:
    client = ls.Client(project)
    seen, token = [], None
    while True:
        page = client.search_runs(order_by="metrics.acc desc", max_results=2, page_token=token)
        seen.extend(names(page))
        token = page.token
        if token is None:
            break
    assert sorted(seen) == sorted(runs)
    assert len(seen) == len(set(seen))


def _walk(client: ls.Client, size: int, between: Any = None, **search: Any) -> list[str]:
    """Every page of a search, `between(page_number)` run after each page."""
    seen, token, number = [], None, 0
    while True:
        page = client.search_runs(max_results=size, page_token=token, **search)
        seen.extend(names(page))
        token, number = page.token, number + 1
        if token is None:
            return seen
        if between is not None:
            between(number)


def test_pages_walk_the_full_result_in_order_whatever_the_ties_missing_values_and_page_size(project: Project) -> None:
    # ties on every sort key and runs without the value: the page boundary falls inside them
    for i, (acc, team) in enumerate([(0.5, "b"), (0.5, "a"), (None, "a"), (0.9, None), (0.5, "b"), (None, None),
                                     (0.1, "a"), (0.9, "b")]):  # fmt: skip
        with ls.start_run(experiment="ties", run_name=f"t{i}", tags={"team": team} if team else {}) as run:
            if acc is not None:
                run.log_metric("acc", acc)
    client = ls.Client(project)
    for order in ([], ["metrics.acc desc"], ["metrics.acc asc", "tags.team desc"], ["tags.team", "metrics.acc"],
                  ["name desc"]):  # fmt: skip
        whole = names(client.search_runs(order_by=order, experiment_names="ties"))
        assert len(whole) == 8
        for size in (1, 2, 3, 5, 7):
            assert _walk(client, size, order_by=order, experiment_names="ties") == whole, (order, size)


def test_runs_started_or_changed_between_pages_shift_no_other_run(project: Project) -> None:
    for i in range(6):
        with ls.start_run(experiment="live", run_name=f"old{i}", tags={"keep": "yes"}):
            pass
    client = ls.Client(project)

    def start_one(number: int) -> None:  # newest first: each new run lands before the pages already read
        with ls.start_run(experiment="live", run_name=f"new{number}", tags={"keep": "yes"}):
            pass

    seen = _walk(client, 2, between=start_one, experiment_names="live", filter_string="tags.keep = 'yes'")
    assert seen == [f"old{i}" for i in reversed(range(6))]

    first = client.search_runs("tags.keep = 'yes'", experiment_names="live", order_by="name", max_results=3)
    assert names(first) == ["new1", "new2", "old0"]
    with ls.start_run(run_id=first[0].id) as run:  # a run of the first page stops matching
        run.set_tag("keep", "no")
    rest = names(client.search_runs("tags.keep = 'yes'", experiment_names="live", order_by="name",
                                    page_token=first.token))  # fmt: skip
    assert rest == ["old1", "old2", "old3", "old4", "old5"]


def test_a_token_from_a_search_with_another_order_is_refused(project: Project, runs: dict[str, str]) -> None:
    client = ls.Client(project)
    token = client.search_runs(max_results=1).token
    assert token is not None
    with pytest.raises(ValidationError, match="same order_by"):
        client.search_runs(order_by=["metrics.acc desc"], page_token=token)
    with pytest.raises(ValidationError, match="invalid page_token"):
        client.search_runs(page_token="bm90IGpzb24=")


def test_search_returns_each_runs_own_values_and_inputs(project: Project, runs: dict[str, str]) -> None:
    """Hits are filled in with one query per kind (the ids bound as one array): nothing missing or crossed."""
    import pyarrow as pa

    with ls.start_run(experiment="exp-a", run_name="with-data") as run:
        run.log_input(pa.table({"x": [1, 2, 3]}), name="train", context="training")
        run.log_metric("acc", float("nan"))
    by_name = {r.info.name: r for r in ls.Client(project).search_runs(max_results=1000)}
    assert set(by_name) == {*runs, "with-data"}
    for i, (lr, acc, team) in enumerate([("0.01", 0.95, "x"), ("0.01", 0.85, "y"), ("0.1", 0.91, "x")]):
        hit = by_name[f"r{i}"]
        assert hit.params == {"lr": lr} and hit.metrics["acc"] == acc and hit.tags["team"] == team
        assert hit.inputs == []
    assert "acc" not in by_name["no-acc"].metrics and by_name["no-acc"].params == {"lr": "0.01"}
    data = by_name["with-data"]
    assert [(i["name"], i["context"], i["rows"]) for i in data.inputs] == [("train", "training", 3)]
    assert data.metrics["acc"] != data.metrics["acc"]  # NaN survives the round trip


def test_compare_runs_shows_what_differs(project: Project, runs: dict[str, str]) -> None:
    comparison = ls.Client(project).compare_runs([runs["r0"], runs["r1"]])
    assert comparison.params["lr"] == ["0.01", "0.01"]
    assert comparison.differing_metrics == ["acc"]
    assert comparison.differing_params == []
    frame = comparison.to_pandas()
    assert frame.loc["metrics.acc"].tolist() == [0.95, 0.85]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics.acc >", "ends early"),
        ("metrics.acc > 'high'", "compare it with a number"),
        ("params.lr = 0.01", "quote the value"),
        ("foo = 1", "unknown field"),
        ("metrics.acc > 1 metrics.f1 > 2", "join conditions"),
        ("metrics.acc ~ 1", "cannot read filter"),
        ("(metrics.acc > 1", r"expected '\)'"),
        ("attributes.bogus = 'x'", "unknown attribute"),
        ("metrics.acc like '%'", "numeric"),
    ],
)
def test_bad_filters_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(text)


def test_bad_order_by_is_rejected() -> None:
    with pytest.raises(FilterError):
        parse_order_by("metrics.acc sideways")


@pytest.mark.parametrize(
    "hostile",
    [
        "params.lr = '0.01'' OR 1=1 --'",
        "tags.team = 'x; DROP TABLE runs; --'",
        "params.`lr') OR 1=1 --` = 'x'",
        "name = 'r0\\' OR \\'1\\'=\\'1'",
    ],
)
def test_filters_cannot_inject_sql(project: Project, runs: dict[str, str], hostile: str) -> None:
    client = ls.Client(project)
    try:
        page = client.search_runs(hostile)
    except FilterError:
        page = []
    assert names(page) == []
    assert len(client.search_runs()) == len(runs)  # the runs table is intact


@given(st.text(max_size=40))
def test_parser_never_crashes_with_anything_but_filter_error(text: str) -> None:
    try:
        parse_filter(text)
    except FilterError:
        pass


def test_parse_tree_shape() -> None:
    tree = parse_filter("metrics.a > 1 and (params.b = 'x' or tags.c != 'y')")
    assert isinstance(tree, BoolOp) and tree.op == "and"
    assert isinstance(tree.items[0], Comparison) and tree.items[0].value == 1
    assert isinstance(tree.items[1], BoolOp) and tree.items[1].op == "or"


def test_backquoted_names_work_in_filters_and_order_by_as_documented(project: Project) -> None:
    """docs/tracking.md: names with other characters go in backticks, ``metrics.`val loss` < 0.2``."""
    for name, loss in (("low", 0.1), ("high", 0.5)):
        with ls.start_run(run_name=name) as run:
            run.log_metric("val loss", loss)
    client = ls.Client(project)
    assert names(client.search_runs("metrics.`val loss` < 0.2")) == ["low"]
    assert names(client.search_runs(order_by=["metrics.`val loss` desc"])) == ["high", "low"]
    assert names(client.search_runs(order_by="metrics.`val loss`")) == ["low", "high"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.acc < 99999999999999999999", {"r0", "r1", "r2", "r3", "r4"}),
        ("metrics.acc > -99999999999999999999 and metrics.acc < 0.9", {"r1", "r3"}),
        ("start_time < 99999999999999999999 and name = 'r0'", {"r0"}),
        ("experiment_id = 3000000000", set()),
        ("experiment_id in (1, 99999999999999999999) and name = 'r0'", {"r0"}),
    ],
)
def test_numbers_beyond_the_columns_integer_range_compare_instead_of_crashing(
    project: Project, runs: dict[str, str], text: str, expected: set[str]
) -> None:
    """A big literal used to reach the driver as an int: OverflowError on SQLite, 'integer out of range' on PG."""
    assert set(names(ls.Client(project).search_runs(text))) == expected


def test_every_run_is_either_null_or_not_null_for_a_metric_even_when_it_logged_nan(project: Project) -> None:
    """NaN is stored as NULL; a run that logged NaN has the metric, so 'is not null' finds it."""
    for name, value in (("nan", float("nan")), ("one", 1.0)):
        with ls.start_run(run_name=name) as run:
            run.log_metric("loss", value)
    with ls.start_run(run_name="none"):
        pass
    client = ls.Client(project)
    assert set(names(client.search_runs("metrics.loss is not null"))) == {"nan", "one"}
    assert names(client.search_runs("metrics.loss is null")) == ["none"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"params.p = 'C:\\data\\'", "C:\\data\\"),  # an escaped backslash may end the value
        (r"params.p = 'C:\data'", "C:\\data"),  # a lone backslash before a letter stays as written
        (r"params.p = 'it\'s'", "it's"),
        ("params.p = 'it''s'", "it's"),
        (r'params.p = "say \"hi\" \\"', 'say "hi" \\'),
    ],
)
def test_quoted_values_unescape_backslashes_and_quotes(text: str, value: str) -> None:
    comparison = parse_filter(text)
    assert isinstance(comparison, Comparison) and comparison.value == value


def test_an_empty_list_of_experiments_finds_no_runs(project: Project, runs: dict[str, str]) -> None:
    """An empty list used to mean every experiment, like None."""
    client = ls.Client(project)
    assert names(client.search_runs(experiment_names=[])) == []
    assert sorted(names(client.search_runs(experiment_names=["exp-b"]))) == ["r4"]
    assert len(client.search_runs()) == 6


def test_a_search_hydrates_its_hits_from_the_snapshot_that_found_them(project: Project, monkeypatch) -> None:
    """A tag changed between the hit query and the hydrate query no longer shows in the result (PostgreSQL
    read at READ COMMITTED: a run matching tags.t = 'a' came back with t = 'b')."""
    with ls.start_run(project=project, tags={"t": "a"}) as run:
        pass
    store = project.tracking
    hydrate = store._hydrate

    def change_then_hydrate(infos, fetchall):
        with project.db.write() as connection:  # another transaction commits between the two reads
            connection.execute(store.t("tags").update().where(store.t("tags").c.run_id == run.id).values(value="b"))
        return hydrate(infos, fetchall)

    monkeypatch.setattr(store, "_hydrate", change_then_hydrate)
    found = ls.Client(project).search_runs("tags.t = 'a'")
    assert [(hit.info.id, hit.tags["t"]) for hit in found] == [(run.id, "a")]
    assert ls.Client(project).get_run(run.id).tags["t"] == "b"  # the other transaction did commit meanwhile


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"filter_string": 123}, r"filter_string=123 is a int; pass a filter such as .* or None for every run"),
        ({"max_results": "10"}, r"max_results='10' is a str; pass an int, 1 to 50000"),
        ({"max_results": True}, r"max_results=True is a bool; pass an int"),
        ({"max_results": 0}, r"max_results=0 is out of range; use 1 to 50000"),
    ],
)
def test_a_search_argument_of_the_wrong_type_is_refused_by_name(
    sqlite_project: Project, arguments: dict[str, Any], message: str
) -> None:
    """A str max_results failed in a comparison and an int filter in the parser, in Python's words."""
    with pytest.raises(ValidationError, match=message):
        ls.Client(sqlite_project).search_runs(**arguments)


def test_ilike_folds_accented_letters_on_sqlite_as_on_postgres(project: Project) -> None:
    """SQLite's lower() folds ASCII only: `ilike 'é%'` missed École there and found it on PostgreSQL."""
    for name in ("école", "École", "ÉCOLE", "ecole", "Ecole"):
        with ls.start_run(experiment="accents", run_name=name, params={"word": name}):
            pass
    client = ls.Client(project)
    for field in ("params.word", "name"):
        assert set(names(client.search_runs(f"{field} ilike 'é%'"))) == {"école", "École", "ÉCOLE"}
        assert set(names(client.search_runs(f"{field} ilike 'ÉCOLE'"))) == {"école", "École", "ÉCOLE"}
        assert set(names(client.search_runs(f"{field} ilike 'e%'"))) == {"ecole", "Ecole"}
        assert set(names(client.search_runs(f"{field} like 'É%'"))) == {"École", "ÉCOLE"}
