"""The plugin interface without processes: payloads, the checks on sources and analyses, how the
worker gathers plugins, the start-up check's messages, per-source policies and the producer's names."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import fakeredis
import pytest

from agentq.analyses import Analysis, enabled_analyses, installed_analyses
from agentq.contract import QuestionRequest, SourceOutcome, parse_request, request_fingerprint
from agentq.errors import InvalidRequest, PluginError, StartupError
from agentq.plugins import PLUGIN_API_VERSION, Source, SourceContext, check_api_version, module_plugins, render
from agentq.settings import Settings
from agentq_tools import plugins as tools_plugins
from producer.client import Client
from tests import plugin_functions, plugin_samples
from worker.job.fanout import FanOut
from worker.job.resilience import ResilientFetch
from worker.ops import plugins
from worker.pool.analyses import bag_of_words
from worker.pool.executor import InferencePool, create_pool

ON_314 = sys.version_info >= (3, 14)
LIMITS: dict[str, Any] = {"max_question_chars": 100, "max_source_timeout_s": 30.0, "max_deadline_s": 30.0}


@pytest.fixture(scope="module")
def threads() -> Iterator[InferencePool]:
    """A thread pool: the analyses' logic, without the cost of starting interpreters."""
    pool = create_pool("thread", 2)
    yield pool
    pool.shutdown()


# ------------------------------------------------------------------------------- payloads
def test_a_payload_renders_to_the_same_text_every_time() -> None:
    """Text stays text; a payload is one line per value in its own order, None left out, nesting indented."""
    assert render("Plain text.") == "Plain text."
    text = render(plugin_samples.PAYLOAD)
    assert text == "title: Rain report.\ncities:\n  city: Paris\n  rain: true\n  mm: 4.5"
    assert render(json.loads(json.dumps(plugin_samples.PAYLOAD))) == text
    assert render([["a", 1], ("b", False)]) == "a\n1\nb\nfalse"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (42, "returned int, not text or a JSON payload"),
        (b"bytes", "returned bytes"),
        ({1: "x"}, "int key"),
        ({"when": object()}, "holds a object"),
        (json.loads("[" * 40 + "]" * 40), "nested deeper than 32"),
    ],
)
def test_what_is_not_json_is_refused(payload: object, message: str) -> None:
    """Anything but text or a JSON-able mapping/list raises TypeError naming what is wrong."""
    with pytest.raises(TypeError, match=message):
        render(payload)


# ------------------------------------------------------------------------------- the objects
async def _fetch(question: str, ctx: SourceContext) -> str:
    return question


def nested_is_not_importable() -> Analysis:
    def inner(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    return Analysis("inner", inner)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Source("_hidden", _fetch), "not a valid name"),
        (lambda: Source("a,b", _fetch), "not a valid name"),
        (lambda: Source("slow", _fetch, timeout_s=0), "timeout_s must be a positive"),
        (lambda: Analysis("lambda", lambda q, t, p: {}), "top level of a module"),
        (nested_is_not_importable, "top level of a module"),
        (lambda: Analysis("m", plugin_functions.word_count, dict), "subclass of AnalysisOutput"),  # type: ignore[arg-type]
        (lambda: Analysis("p", plugin_functions.word_count, params={"x": {1, 2}}), "params must be JSON"),
    ],
)
def test_sources_and_analyses_refuse_what_cannot_work(make: Any, message: str) -> None:
    """Bad names, timeouts, functions a pool cannot import, output models and params fail at construction."""
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_a_plugin_written_for_a_newer_api_is_refused() -> None:
    """api_version above PLUGIN_API_VERSION is a PluginError that says to upgrade; equal or unset passes."""
    check_api_version(Source("ok", _fetch, api_version=PLUGIN_API_VERSION))
    check_api_version(bag_of_words)
    with pytest.raises(PluginError, match=rf"written for agentq plugin API {PLUGIN_API_VERSION + 1}.*upgrade agentq"):
        check_api_version(Source("future", _fetch, api_version=PLUGIN_API_VERSION + 1))


def test_analysis_params_come_from_defaults_then_settings() -> None:
    """Defaults, then configure(settings), then AGENTQ_ANALYSIS_PARAMS; bag_of_words' units follow the settings."""
    assert bag_of_words.params_for(Settings(inference_units=1000, time_scale=0.02)) == {"units": 20}
    chosen = Settings(analysis_params={"bag_of_words": {"units": 7}})
    assert bag_of_words.params_for(chosen) == {"units": 7}
    word_count = plugin_samples.ANALYSES[0]
    assert word_count.params_for(Settings(analysis_params={"word_count": {"terms": 5, "x": [1]}})) == {
        "terms": 5,
        "x": [1],
    }


# ------------------------------------------------------------------------------- gathering
def test_the_built_in_analysis_is_an_entry_point_and_opt_in_ones_need_naming() -> None:
    """bag_of_words is installed like any plugin; numpy_similarity runs only when named; the default must run."""
    installed = installed_analyses()
    assert installed["bag_of_words"] is bag_of_words
    with_tools = {**installed, **{a.name: a for a in tools_plugins.ANALYSES}}
    assert with_tools["numpy_similarity"].opt_in
    assert list(enabled_analyses(Settings(), with_tools)) == ["bag_of_words"]
    chosen = enabled_analyses(Settings(enabled_analyses=("numpy_similarity", "bag_of_words")), with_tools)
    assert list(chosen) == ["numpy_similarity", "bag_of_words"]
    with pytest.raises(ValueError, match="AGENTQ_DEFAULT_ANALYSIS: 'bag_of_words' is not an analysis this worker runs"):
        enabled_analyses(Settings(enabled_analyses=("numpy_similarity",)), with_tools)
    with pytest.raises(ValueError, match="not installed: nope"):
        enabled_analyses(Settings(enabled_analyses=("nope",)))


def test_plugin_modules_add_sources_and_analyses() -> None:
    """AGENTQ_PLUGIN_MODULES' SOURCES and ANALYSES join the installed ones; opt-in rules still apply."""
    sources, analyses = module_plugins(("tests.plugin_samples",))
    assert list(sources) == ["slow_sample", "payload_sample"] and list(analyses) == ["word_count"]
    loaded = plugins.load(Settings(plugin_modules=("tests.plugin_samples",)))
    assert {"slow_sample", "payload_sample", "weather"} <= set(loaded.sources)
    assert list(loaded.analyses) == ["bag_of_words", "word_count"]
    assert loaded.default_sources == ("weather", "news", "knowledge_base", "slow_sample", "payload_sample")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"plugin_modules": ("tests.no_such_module",)}, "'tests.no_such_module' does not import: ModuleNotFoundError"),
        ({"plugin_modules": ("tests.plugin_functions",)}, "neither a SOURCES nor an ANALYSES list"),
        (
            {"http_sources": {"weather": {"url": "http://u.test/w?q={question}", "fields": ["a"]}}},
            "two plugins are registered as the source 'weather'",
        ),
        ({"enabled_sources": ("nope",)}, "AGENTQ_ENABLED_SOURCES: not installed: nope"),
        ({"default_analysis": "word_count"}, "AGENTQ_DEFAULT_ANALYSIS: 'word_count' is not an analysis"),
        (
            {
                "http_sources": {
                    "h": {"url": "http://u.test", "fields": ["a"], "header_files": {"X-Key": "/nonexistent"}}
                }
            },
            "h: cannot read the X-Key header's file /nonexistent",
        ),
    ],
)
def test_what_cannot_load_stops_the_worker_with_one_line(settings: dict[str, Any], message: str) -> None:
    """Unimportable modules, clashing names, bad choices and unreadable secret files are StartupErrors."""
    with pytest.raises(StartupError) as caught:
        plugins.load(Settings(**settings))
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------- the start-up check
async def test_the_start_up_check_runs_and_validates_every_analysis(threads: InferencePool) -> None:
    """Good analyses pass; output that does not fit its model fails, naming the analysis, module and field."""
    good = {"bag_of_words": bag_of_words, "word_count": plugin_samples.ANALYSES[0]}
    await plugins.check_analyses(threads, good, Settings(time_scale=0.01))
    misfit = Analysis("misfit", plugin_functions.misfit)
    with pytest.raises(PluginError) as caught:
        await plugins.check_analyses(threads, {"misfit": misfit}, Settings())
    message = str(caught.value)
    assert message.startswith("analysis 'misfit' (module tests.plugin_functions) returned output that does not fit")
    assert "relevance: Field required" in message and "summary: Input should be a valid string" in message


@pytest.mark.skipif(not ON_314, reason="InterpreterPoolExecutor is new in 3.14")
async def test_an_analysis_beside_pydantic_cannot_run_in_a_subinterpreter() -> None:
    """A function whose module imports pydantic fails the check in a subinterpreter; the message says what to do."""
    pool = create_pool("interpreter", 1)
    beside = Analysis("beside_pydantic", plugin_samples.in_this_module)
    try:
        with pytest.raises(PluginError) as caught:
            await plugins.check_analyses(pool, {"beside_pydantic": beside}, Settings())
        await plugins.check_analyses(pool, {"word_count": plugin_samples.ANALYSES[0]}, Settings())  # its own module
    finally:
        pool.shutdown()
    message = str(caught.value)
    print(message)
    assert message.startswith("analysis 'beside_pydantic' (module tests.plugin_samples) cannot run in a subinterpreter")
    assert "pydantic_core" in message and "AGENTQ_EXECUTOR=process" in message


# ------------------------------------------------------------------------------- the fan-out
async def test_payloads_are_rendered_and_plugin_fields_go_to_details(threads: InferencePool) -> None:
    """A payload source's data is its rendered text; the analysis's own fields are under details."""
    s = Settings()
    word_count = plugin_samples.ANALYSES[0]
    sources = {x.name: x for x in plugin_samples.SOURCES}
    fan = FanOut(threads, sources, analysis=word_count, params=word_count.params_for(s))
    (o,), _ = await fan.run(
        QuestionRequest(question="rain in Paris?"),
        SourceContext(s, "job-1"),
        source_names=["payload_sample"],
        source_timeout_s=1.0,
        deadline_s=5.0,
    )
    assert o.status == "ok" and o.data == render(plugin_samples.PAYLOAD)
    assert o.inference is not None and o.inference.analysis == "word_count"
    assert o.inference.summary == "title: Rain report." and o.inference.top_terms == ["paris", "rain"]
    assert o.inference.details == {"words": 10, "hits": 3} and o.inference.work_units is None
    assert o.inference.relevance == 0.3 and o.inference_s is not None and o.inference.ran_in.executor == "thread"


async def test_output_that_does_not_fit_is_that_sources_error(threads: InferencePool) -> None:
    """An analysis whose output fails its model: that source is `error` with the reason; the job goes on."""
    fan = FanOut(
        threads,
        {"payload_sample": plugin_samples.SOURCES[1]},
        analysis=Analysis("m", plugin_functions.misfit),
        params={},
    )
    (o,), _ = await fan.run(
        QuestionRequest(question="q"),
        SourceContext(Settings(), "job-1"),
        source_names=["payload_sample"],
        source_timeout_s=1.0,
        deadline_s=5.0,
    )
    assert o.status == "error" and o.inference is None and o.data
    assert "analysis 'm' returned output that does not fit AnalysisOutput: " in (o.error or "")


class CountingRedis(fakeredis.FakeAsyncRedis):
    """fakeredis that counts every command it is sent."""

    commands: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return await super().execute_command(*args, **options)


async def test_policies_a_source_turns_off_make_no_redis_call() -> None:
    """Every policy on in the settings and off for the source: that source's fetch makes no Redis call."""
    redis = CountingRedis()
    redis.commands = []
    s = Settings(rate_limits={"payload_sample": 5, "slow_sample": 5})
    policy = ResilientFetch(s, redis)
    source = plugin_samples.SOURCES[1]
    outcome = SourceOutcome(name=source.name, timeout_s=1.0)
    text = await policy.fetch(source, QuestionRequest(question="q"), SourceContext(s, "job-1"), outcome, 1e12)
    assert text == render(plugin_samples.PAYLOAD)
    assert redis.commands == [] and outcome.cache == "off" and outcome.attempts == 1 and outcome.circuit is None

    echo = Source("echo", _fetch)  # the same settings, every policy on: the Redis calls are there
    await policy.fetch(echo, QuestionRequest(question="q"), SourceContext(s, "job-1"), SourceOutcome(name="echo"), 1e12)
    assert redis.commands, "a source with its policies on is cached, timed and counted"


# ------------------------------------------------------------------------------- the contract and the producer
def test_a_request_may_name_an_analysis_checked_like_sources() -> None:
    """analysis is validated against the known names; it changes the fingerprint only when given."""
    request = parse_request(
        {"question": "q", "analysis": " word_count "}, known_sources=(), known_analyses=("word_count",), **LIMITS
    )
    assert request.analysis == "word_count"
    with pytest.raises(InvalidRequest, match="analysis: unknown analysis 'nope'; known: word_count"):
        parse_request({"question": "q", "analysis": "nope"}, known_sources=(), known_analyses=("word_count",), **LIMITS)
    assert parse_request({"question": "q", "analysis": "anything"}, known_sources=None, **LIMITS).analysis == "anything"
    plain = QuestionRequest(question="q")
    assert request_fingerprint(plain) != request_fingerprint(QuestionRequest(question="q", analysis="word_count"))
    before = {"question": "q", "sources": None, "source_timeout_s": None, "deadline_s": None, "no_cache": False}
    assert request_fingerprint(plain) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()


@pytest.mark.e2e  # starts a fresh Python to see what the producer imports
def test_the_producer_knows_entry_points_and_http_sources_and_leaves_plugin_modules_to_the_worker() -> None:
    """Names come from entry points and AGENTQ_HTTP_SOURCES; under AGENTQ_PLUGIN_MODULES any name passes, unimported."""
    http = {"headlines": {"url": "http://u.test/news?q={question}", "fields": ["articles[].title"]}}
    client = Client(Settings(http_sources=http))
    assert client.validate("q", sources=["headlines", "weather"], analysis="bag_of_words").sources
    with pytest.raises(InvalidRequest, match="unknown source 'slow_sample'"):
        client.validate("q", sources=["slow_sample"])
    with pytest.raises(InvalidRequest, match="unknown analysis 'word_count'"):
        client.validate("q", analysis="word_count")
    code = (
        "import sys; from agentq.settings import Settings; from producer.client import Client\n"
        "c = Client(Settings(plugin_modules=('tests.plugin_samples',)))\n"
        "r = c.validate('q', sources=['slow_sample'], analysis='word_count')\n"
        "print(r.sources, r.analysis, 'tests.plugin_samples' in sys.modules, 'worker' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["('slow_sample',)", "word_count", "False", "False"]
