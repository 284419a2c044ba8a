import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import loopstack as ls
from loopstack.core.errors import FilterError
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
