"""Reading as the evidence allows: heading blocks join the read set, citations name their definition or
section, answers to "which function/file/Article" name what was read, looping replies are cut, and a
store keeps the reading head its blocks were written after."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import pytest
import torch

from agent import Agent
from agent.names import name_pins
from l2m_core.answer_form import (
    asks_for,
    defined_answer,
    named_answer,
    passage_answer,
    quantity_answer,
    quantity_asked,
    referred_names,
    supported_answer,
    without_repeats,
)
from l2m_core.errors import L2MError
from l2m_core.loading import load_model
from l2m_core.memory import Citation, Memory, reading_head
from l2m_core.scoring import question_likelihoods
from l2m_core.settings import MemorySettings

SETTINGS = dict(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, lexical_top_k=1, neighbours=0,
                hot_budget_mb=4, heading_blocks=True)

# A long function whose `def` line lies many blocks before the rare word in its body.
CODE = textwrap.dedent('''\
    """Shipping helpers."""


    def parcel_cost(weight, distance):
        """Price of one parcel."""
        total = 0
        total = total + weight * 2
        total = total + distance * 3
        total = total + weight * distance
        total = total - 1
        total = total * 2
        total = total + 5
        total = total + 7
        total = total + 11
        surcharge = zanzibar_tariff(total)
        return total + surcharge


    def other():
        return 1
''')

LEGAL = textwrap.dedent('''\
    Article 1
    Subject matter

    1. This Regulation lays down rules on the keeping of lamps in public buildings and on the way in
    which their owners report broken ones to the authority that the Member State has designated.

    2. The owners shall keep a register of every lamp that has been repaired, together with the date of
    the repair, the name of the repairer and the quince-coloured seal that the repairer applied.

    Article 2
    Definitions

    For the purposes of this Regulation, the following definitions apply:
    (1) 'lamp' means any device that gives light;
    (2) 'owner' means the person who keeps a lamp;
    (3) 'registered lamp' means a lamp entered in the register.

    Article 3
    Entry into force

    This Regulation shall enter into force on the twentieth day following its publication.
''')


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture
def corpus(tmp_path, tiny):
    (tmp_path / "ship.py").write_text(CODE)
    (tmp_path / "rules.txt").write_text(LEGAL)
    agent = Agent.open(tmp_path, tmp_path / "store", tiny, settings=MemorySettings(**SETTINGS))
    agent.ingest()
    yield agent
    agent.close()


def test_the_heading_block_of_a_body_found_by_text_is_read_and_named(corpus):
    memory = corpus.memory
    found = memory.lexical.top("zanzibar_tariff", 1)
    heading = corpus.index.blocks_for("ship.py", 4, 4)[0]  # the block where `def parcel_cost` starts
    assert found and heading not in found  # the word sits far below the `def` line
    answer = corpus.ask("What does zanzibar_tariff get?", max_new_tokens=2)
    assert heading in answer.lexical and found[0] in answer.lexical
    assert all(heading in ids for ids in answer.read_set.values())
    labels = {c.label for c in answer.citations if c.source == "ship.py"}
    assert labels <= {"parcel_cost", "other", ""} and "parcel_cost" in labels


def test_legal_paragraph_found_by_text_reads_its_article_heading_and_cites_it(corpus):
    answer = corpus.ask("What colour is the seal the repairer applied?", max_new_tokens=2)
    heading = corpus.index.blocks_for("rules.txt", 1, 1)[0]
    assert heading in answer.lexical
    article_1 = [c for c in answer.citations if c.source == "rules.txt" and c.line_start <= 8]
    assert article_1 and article_1[0].label == "Article 1"
    assert str(article_1[0]).endswith(" Article 1")
    assert answer.to_dict()["citations"][0]["label"] == answer.citations[0].label


def test_answers_name_what_was_read_when_a_name_is_asked():
    assert asks_for("Which function turns a path into its matching form?") == "symbol"
    assert asks_for("In which file is the registry of pattern factories kept?") == "file"
    assert asks_for("Which Article sets out the obligations of importers?") == "section"
    assert asks_for("What does match_file return for an excluded file?") is None
    assert asks_for("What does Article 4 define?") is None and asks_for("What is the file for?") is None
    # "Where is X?" asks where X is defined: the file, named with the definition read there
    assert asks_for("Where is the undo journal that records edits?") == "file"
    assert asks_for("For software, where may the marking be put?") is None
    assert asks_for("Which tqdm classmethod removes a bar from the live instances?") == "symbol"
    assert asks_for("Which context manager swaps the stream handlers?") == "symbol"
    # a hyphenated word before the noun: "module-level" asks for no module, "low-level" still for a helper
    assert asks_for("Which module-level constant holds the warning text?") is None
    assert asks_for("Which module-level function reads the config?") == "symbol"
    assert asks_for("Which low-level helper writes every byte?") == "symbol"
    assert asks_for("What CSS class is given to the title?") is None  # markup, not code
    top = Citation("pkg/util.py", 1, 9, 0.6, (1,), "normalize_file")
    other = Citation("pkg/a.py", 3, 4, 0.4, (7,), "Spec.walk")
    cites = [top, other]
    # the reply names nothing it read: the answer is the top citation's name
    named = named_answer("Which function normalises paths?", "It is fix_path.", cites)
    assert named == ("normalize_file (pkg/util.py)", cites)
    # the reply names a place it read: kept, and that place becomes the first citation
    named = named_answer("Which method walks the tree?", "The walk method.", cites)
    assert named == ("The walk method.", [other, top])
    # of two places the reply names, the one it names first ("walk ... then normalize_file")
    both = named_answer("Which method walks the tree?", "Spec.walk, which calls normalize_file.", cites)
    assert both == ("Spec.walk, which calls normalize_file.", [other, top])
    near_miss = named_answer("Which method walks the tree?", "It is normalize_files.", cites)
    assert near_miss[0] == "normalize_file (pkg/util.py)"
    assert named_answer("In which module is it?", "In utils.", cites)[0] == "pkg/util.py (normalize_file)"
    assert named_answer("Where is the path normaliser?", "In utils.", cites)[0] == "pkg/util.py (normalize_file)"
    assert named_answer("In which module is it?", "It is in a.py.", cites) == ("It is in a.py.", [other, top])
    assert named_answer("What does it return?", "A string.", cites) == ("A string.", cites)
    # asked for a class, a method read answers with its class
    method = Citation("pkg/util.py", 40, 52, 0.6, (5,), "TreeEntry.stat")
    assert named_answer("Which class keeps the cached stat results?", "A cache.", [method, top]) == (
        "TreeEntry (pkg/util.py)", [method, top])
    for asked in ("Which classmethod keeps the cached stat results?", "Which class method keeps the stat results?"):
        assert named_answer(asked, "A cache.", [method, top])[0] == "TreeEntry.stat (pkg/util.py)"
    unnamed = [Citation("pkg/util.py", 1, 9, 1.0, (1,))]
    assert named_answer("Which function normalises paths?", "fix_path", unnamed) == ("fix_path", unnamed)


def test_a_definition_asked_for_by_what_it_does_is_the_place_read_that_best_explains_the_question():
    helper = Citation("pkg/tk.py", 170, 180, 0.5, (4,), "Tk._dispatching_helper")
    trim = Citation("pkg/utils.py", 315, 328, 0.3, (9,), "disp_trim")
    other = Citation("pkg/gui.py", 1, 20, 0.1, (12,), "Gui.display")
    far = Citation("pkg/far.py", 1, 9, 0.05, (20,), "far_away")
    cites = [helper, trim, other, far]
    question = "Which helper cuts a string down to a given visible width?"
    asked: list[list[str]] = []

    def explains(best: Citation):
        def likelihood(runs: list[Citation]) -> list[float]:
            asked.append([c.label for c in runs])
            return [1.0 if c is best else 0.0 for c in runs]
        return likelihood

    # the reply names a wrong place read (for its word "helper"): the one that explains the question answers
    assert named_answer(question, "Tk._dispatching_helper", cites, likelihood=explains(trim)) == (
        "disp_trim (pkg/utils.py)", [trim, helper, other, far])
    assert asked.pop() == ["Tk._dispatching_helper", "disp_trim", "Gui.display"]  # the first `among` (3)
    # the reply names the place that explains it best: the reply stands, that place cited first
    assert named_answer(question, "It is disp_trim.", cites, likelihood=explains(trim)) == (
        "It is disp_trim.", [trim, helper, other, far])
    # the model's choice is a definition: of the runs read of it (an overload, then the body), the first
    overload = Citation("pkg/utils.py", 300, 304, 0.4, (8,), "disp_trim")
    assert named_answer(question, "It trims.", [helper, overload, trim], likelihood=explains(trim)) == (
        "disp_trim (pkg/utils.py)", [overload, helper, trim])
    asked.pop()
    # a run in no definition (imports, a module's head) is no function's answer, so it is not weighed
    imports = Citation("pkg/tk.py", 1, 8, 0.6, (1,))
    assert named_answer(question, "It trims.", [imports, helper, trim], likelihood=explains(imports)) == (
        "Tk._dispatching_helper (pkg/tk.py)", [helper, imports, trim])
    assert asked.pop() == ["Tk._dispatching_helper", "disp_trim"]
    # a place the reply names beyond the first three is weighed too
    assert named_answer(question, "far_away", cites, likelihood=explains(far))[0] == "far_away"
    assert asked.pop() == ["Tk._dispatching_helper", "disp_trim", "Gui.display", "far_away"]
    # not asked for a function or class by what it does: the likelihood is not asked
    assert named_answer("In which file is the trimming done?", "pkg/tk.py", cites, likelihood=explains(trim)) == (
        "pkg/tk.py", [helper, trim, other, far])
    texts = {"pkg/tk.py": "class Tk(Gui):\n    def _dispatching_helper(self):", "pkg/utils.py": "def disp_trim(s):",
             "pkg/gui.py": "class Gui:", "pkg/far.py": "def far_away():"}
    refers = named_answer("Which class does Tk extend?", "Gui", cites, lambda c: texts[c.source], explains(trim))
    assert refers == ("Gui (pkg/tk.py)", cites)  # a name the text read refers to, by the referring run
    assert asked == [["Tk._dispatching_helper", "disp_trim", "Gui.display"]]  # only the second call above


def test_an_exception_asked_for_is_one_that_a_run_read_raises_not_the_function_read():
    texts = {
        "pkg/app.py": "def __init__(self, name):\n    self.name = name\n    self.reset()\n",
        "pkg/config.py": ("def load(self, preset):\n    try:\n        data = parse(preset)\n"
                          "    except SyntaxFailure as e:\n        raise\n    if preset not in PRESETS:\n"
                          "        raise KeyError(f'unknown preset {preset}')\n    return data\n"),
        "pkg/rules.py": ("def link(state):\n    if not state.linker:\n"
                         "        raise errors.NotInstalled('linker missing')\n"),
    }
    init = Citation("pkg/app.py", 1, 3, 0.5, (1,), "App.__init__")
    load = Citation("pkg/config.py", 1, 8, 0.3, (2,), "App.load")
    link = Citation("pkg/rules.py", 1, 3, 0.2, (3,), "link")
    cites = [init, load, link]

    def text_of(c: Citation) -> str:
        return texts[c.source]

    # a built-in exception, raised by the second run read (not `__init__`, the top one, nor the bare `raise`)
    asked = "What exception is raised if you create an App with a preset it does not know?"
    assert named_answer(asked, "It fails.", cites, text_of) == ("KeyError (pkg/config.py)", [load, init, link])
    asked = "If the linker is missing, which exception does the link rule raise when it runs?"
    assert named_answer(asked, "App.__init__", cites, text_of) == ("NotInstalled (pkg/rules.py)", [link, init, load])
    # what is caught only where the question speaks of catching
    asked = "Which exception does the preset loader catch when parsing fails?"
    assert named_answer(asked, "It fails.", cites, text_of)[0] == "SyntaxFailure (pkg/config.py)"
    # asked as users ask: "What does X raise ...?", "..., what is raised?", "What error do I get ...?"
    for asked in ("What does App.load raise if the preset is unknown?", "What error do I get for an unknown preset?",
                  "If I load a preset that does not exist, what is raised?"):
        assert named_answer(asked, "It fails.", cites, text_of)[0] == "KeyError (pkg/config.py)", asked
    # the words of the situation decide, not "raise" (every mention has it) or the class all the runs are in
    texts["pkg/enable.py"] = ("def enable(self, rule):\n    if rule not in self.rules:\n"
                              "        raise ValueError(f'App {rule}')\n")
    enable = Citation("pkg/enable.py", 1, 3, 0.6, (4,), "App.enable")
    asked = "What does App raise if I load a preset it does not know?"
    assert named_answer(asked, "It fails.", [enable, load], text_of)[0] == "KeyError (pkg/config.py)"
    # and the words of a raise's message, on the lines after it
    texts["pkg/send.py"] = ("def send(self, timeout):\n    try:\n        connect, read = timeout\n"
                            "    except ValueError:\n        raise ValueError(\n"
                            "            f'Invalid timeout {timeout}. Pass a (connect, read) pair'\n        )\n"
                            "    try:\n        return self.urlopen()\n    except ReadTimeoutError as e:\n"
                            "        raise ReadTimeout(e)\n")
    send = Citation("pkg/send.py", 1, 11, 0.6, (5,), "App.send")
    asked = "Which error is raised if send is given a timeout tuple of three values, not a (connect, read) pair?"
    assert named_answer(asked, "It fails.", [send], text_of)[0] == "ValueError (pkg/send.py)"
    assert asks_for("What error message is shown?") is None
    assert asks_for("What may be raised by a Member State?") is None
    # none raised in the runs read: the reply stands (it may name one; the function read never is one)
    assert named_answer(asked, "It raises OSError.", [init], text_of) == ("It raises OSError.", [init])


def test_a_reply_that_names_one_place_read_per_sentence_is_cut_to_the_one_chosen():
    # a small model asked "which function" lists what it read, one candidate a sentence: a list is no answer
    text = Citation("main.py", 332, 354, 0.8, (1,), "Parser.normalizeLinkText")
    link = Citation("common/normalize_url.py", 12, 23, 0.1, (2,), "normalizeLink")
    cites = [text, link]
    question = "Which function normalizes a link URL before it is put in an href?"
    reply = ("1. The function `normalizeLinkText` is the one that does it.\n\n"
             "The function `normalizeLink` is the one that does it. It returns the URL.")
    assert named_answer(question, reply, cites) == ("The function `normalizeLinkText` is the one that does it.", cites)
    chosen = named_answer(question, reply, cites, likelihood=lambda runs: [float(c is link) for c in runs])
    assert chosen == ("The function `normalizeLink` is the one that does it. It returns the URL.", [link, text])
    # a sentence that names the answer and others describes it, and stands whole
    described = "normalizeLink, which calls Parser.normalizeLinkText. It returns the URL."
    assert named_answer(question, described, cites)[0] == described


def test_an_article_asked_for_by_what_it_says_is_the_section_read_that_best_explains_the_question():
    art36 = Citation("nis2.txt", 1140, 1145, 0.3, (7,), "Article 36")
    art35 = Citation("nis2.txt", 1131, 1138, 0.5, (6,), "Article 35")
    art31 = Citation("nis2.txt", 1013, 1015, 0.2, (4,), "Article 31")
    question = "Which article covers a breach that is also a personal data breach under the GDPR?"

    def likelihood(runs: list[Citation]) -> list[float]:
        return [1.0 if c is art35 else 0.0 for c in runs]

    # the reply names a wrong Article read beside the one that explains the question: that one answers
    assert named_answer(question, "It is covered by Article 36.", [art36, art35, art31], likelihood=likelihood) == (
        "Article 35 (nis2.txt)", [art35, art36, art31])
    # the reply names that one: it stands, cited on it
    assert named_answer(question, "Article 35 covers it.", [art36, art35, art31], likelihood=likelihood) == (
        "Article 35 covers it.", [art35, art36, art31])


def test_where_a_named_definition_is_defined_is_answered_with_the_definition_read():
    mention = Citation("app/_legacy.py", 40, 48, 0.7, (3,), "LegacyTerm")
    defined = Citation("app/segment.py", 60, 75, 0.2, (9,), "Segment")
    method = Citation("app/lines.py", 5, 9, 0.1, (12,), "Lines.Segment")
    for question in ("Where is Segment defined?", "Which file defines Segment?", "In which module is the class "
                     "Segment defined?", "Which file has the class `Segment`?"):
        # the reply names the place BM25 ranked first, which only mentions the name: the definition answers
        assert named_answer(question, "app/_legacy.py", [mention, defined, method]) == (
            "app/segment.py (Segment)", [defined, mention, method])
    # a question that goes on keeps the reply's answer to the rest
    assert named_answer("Where is the class Segment defined, and what does it hold?", "It holds text.",
                        [mention, defined]) == ("app/segment.py (Segment). It holds text.", [defined, mention])
    # a run under another label that holds the definition's line; a top-level one before a local function
    texts = {mention: "        def Segment(obj):\n            return obj", defined: "x = 1\n\ndef Segment(obj):"}
    relabelled = [mention, replace(defined, label="Node")]
    texts[relabelled[1]] = texts[defined]
    assert named_answer("Where is Segment defined?", "", relabelled, texts.get)[1][0] == relabelled[1]
    assert named_answer("Where is Segment defined?", "", [mention], texts.get)[1] == [mention]
    # a question that describes what it looks for, or a name not read: as before
    assert named_answer("Where is the segment splitter defined?", "", [mention, defined])[0] == (
        "app/_legacy.py (LegacyTerm)")
    assert named_answer("Where is Region defined?", "", [mention, defined])[0] == "app/_legacy.py (LegacyTerm)"


def test_where_is_a_named_class_cites_its_definition_not_the_file_that_mentions_it_most(tmp_path, tiny):
    (tmp_path / "screen.py").write_text("".join(
        f"def draw_{i}(canvas):\n    \"\"\"Draw a Widget, as defined by the Widget's canvas.\"\"\"\n"
        f"    return Widget(canvas, Widget.size + {i})\n\n\n"
        for i in range(6)))
    (tmp_path / "parts.py").write_text('"""Parts."""\n\n\nclass Widget:\n    """A box on a canvas."""\n\n'
                                         '    def __init__(self, canvas, n):\n        self.canvas = canvas\n')
    with Agent.open(tmp_path, tmp_path / "store", tiny, settings=MemorySettings(**SETTINGS)) as agent:
        agent.ingest()
        assert agent.memory.lexical.top("Where is Widget defined?", 1)[0] not in agent.memory.blocks_for("parts.py")
        answer = agent.ask("Where is Widget defined?", max_new_tokens=4)
        assert answer.text == "parts.py (Widget)"
        assert answer.citations[0].source == "parts.py" and answer.citations[0].label == "Widget"


def test_a_place_the_question_names_is_not_its_answer():
    subject = Citation("pkg/spec.py", 10, 20, 0.7, (1,), "Spec.from_lines")
    helper = Citation("pkg/util.py", 40, 44, 0.3, (5,), "lookup_pattern")
    cites = [subject, helper]
    question = "Which util function does Spec.from_lines use to find a factory?"
    # the top citation is the function the question asks about, so the answer is the next one read, cited
    # first as the answer's source
    assert named_answer(question, "It calls from_lines.", cites) == ("lookup_pattern (pkg/util.py)",
                                                                    [helper, subject])
    assert named_answer(question, "Spec.from_lines uses lookup_pattern.", cites) == (
        "Spec.from_lines uses lookup_pattern.", [helper, subject])
    # a name that is a plain word is not taken as given by the question's words
    registry = Citation("pkg/util.py", 60, 70, 0.9, (8,), "Registry.name")
    assert named_answer("Which function stores a factory under a name?", "It is f.", [registry, helper])[0] == (
        "Registry.name (pkg/util.py)")
    article_13 = Citation("act.txt", 2690, 2701, 0.8, (9,), "Article 13")
    article_28 = Citation("act.txt", 3300, 3310, 0.2, (30,), "Article 28")
    legal = "Article 13(12) tells the manufacturer to draw up the declaration in line with which Article?"
    assert named_answer(legal, "In line with the law.", [article_13, article_28]) == (
        "Article 28 (act.txt)", [article_28, article_13])
    # every place read is named by the question: the reply stands
    assert named_answer(legal, "Article 30.", [article_13]) == ("Article 30.", [article_13])


def test_a_name_the_read_text_refers_to_answers_a_question_about_it():
    article_14 = Citation("act.txt", 10, 12, 0.8, (1,), "Article 14")
    article_16 = Citation("act.txt", 40, 44, 0.2, (6,), "Article 16")
    text = {article_14: "1. The manufacturer shall notify the vulnerability to the CSIRT designated in accordance "
                        "with Article 13(4) and to ENISA. It shall send the notification via the single reporting "
                        "platform established pursuant to Article 17.",
            article_16: "ENISA shall establish the single reporting platform."}
    cites = [article_14, article_16]
    refers = "Through the platform set up under which Article must manufacturers send their notifications?"
    # the answer is the Article the read paragraph refers to where the question's words are, not a place read
    assert named_answer(refers, "The answer is:", cites, text.get) == ("Article 17 (act.txt)", cites)
    assert named_answer(refers, "Under Article 13(4).", cites, text.get)[0] == "Article 17 (act.txt)"
    # the place the question names is the referring one, though another place read was cited first
    named = "Article 14 sends the notifications through the platform set up under which Article?"
    article_16_text = {**text, article_16: "ENISA shall establish the platform under Article 3(2)."}
    assert named_answer(named, "The answer is:", [article_16, article_14], article_16_text.get) == (
        "Article 17 (act.txt)", [article_14, article_16])
    # a sentence led by the which-phrase: the words it asks about may stand on either side of the mention
    led = "The network joins the national CSIRTs. Under which Article are those CSIRTs designated?"
    network = Citation("act.txt", 50, 52, 0.9, (8,), "Article 15")
    joined = {network: "The network shall be composed of the CSIRTs designated pursuant to Article 10 and CERT-EU."}
    assert named_answer(led, "Article 15.", [network], joined.get)[0] == "Article 10 (act.txt)"
    # each: the question, the reply, the place read, its text and the answer
    for question, reply, place, read_there, answer in [
        # a heading read with its paragraph names the place read, not an Article the text refers to
        ("Entities may use certification schemes. Under which Article must those schemes have been adopted?",
         "Article 24.", Citation("act.txt", 70, 74, 0.9, (12,), "Article 24"),
         "### Article 24\n**Use of certification schemes**\n\n1. Entities may use products certified under "
         "certification schemes adopted pursuant to Article 49.", "Article 49 (act.txt)"),
        # asked for another act's Article, the answer is one the read text gives as another act's
        ("A breach found in supervision must be told to the supervisory authorities. Which GDPR articles identify "
         "those authorities?", "Article 35.", Citation("act.txt", 60, 61, 0.9, (9,), "Article 35"),
         "1. Where an infringement of Articles 21 and 23 of this Directive can entail a personal data breach, as "
         "defined in Article 4, point (12), of Regulation (EU) 2016/679, they shall inform the supervisory "
         "authorities as referred to in Article 55 or 56 of that Regulation. 2. They shall act under Article 32 of "
         "this Directive.", "Article 55 (act.txt)"),
        # ... and where the read text gives none (the act named is the one read), the answer is the place read
        ("Which article of NIS2 lets Member States keep stricter cybersecurity provisions?", "Article 21.",
         Citation("act.txt", 20, 21, 0.9, (4,), "Article 5"),
         "Member States may keep provisions ensuring a higher level of cybersecurity, consistent with their "
         "obligations under Article 21 of this Directive.", "Article 5 (act.txt)"),
    ]:
        assert named_answer(question, reply, [place], {place: read_there}.get)[0] == answer
    # "In which Article ...?" asks where it is said: the place read
    assert named_answer("In which Article are CSIRTs designated?", "It says.", [network], joined.get)[0] == (
        "Article 15 (act.txt)")
    # asking where something is said, the answer stays the place read
    where = "Which Article says that manufacturers notify ENISA of a vulnerability?"
    assert named_answer(where, "The answer is:", cites, text.get) == ("Article 14 (act.txt)", cites)
    # a question naming the top definition outside its which-phrase asks for a name its text uses
    base = Citation("pkg/wait.py", 72, 76, 0.9, (3,), "wait_none")
    code = {base: "class wait_none(wait_fixed):\n    \"\"\"Does not wait.\"\"\"\n\n    def __init__(self) -> None:\n"
                  "        super().__init__(0)\n"}
    assert named_answer("Which class does wait_none extend?", "It is a class.", [base], code.get) == (
        "wait_fixed (pkg/wait.py)", [base])
    # of the runs read of the class the question names (not cited first), the one whose mention fits best;
    # a word before a parenthesis in prose is no call
    init = Citation("pkg/__init__.py", 1, 8, 0.5, (9,), "")
    doc = Citation("pkg/wait.py", 90, 99, 0.3, (11,), "wait_random")
    line = Citation("pkg/wait.py", 80, 89, 0.2, (10,), "wait_random")
    runs = {init: "from pkg.wait import wait_random\n", line: "class wait_random(wait_fixed):\n    \"\"\"Waits.",
            doc: "    The wait_fixed strategy (which waits a fixed time) may suit a class of uses.\n\"\"\"\n"
                 "    def __call__(self, state):\n        return random.uniform(0, self.wait)\n"}
    assert named_answer("Which class does wait_random extend?", "wait_random.", [init, doc, line], runs.get) == (
        "wait_fixed (pkg/wait.py)", [line, init, doc])
    # the class line read in a run labelled for the definition before it (most of its lines)
    before = Citation("pkg/wait.py", 70, 81, 0.2, (10,), "wait_fixed.__call__")
    runs[before] = "    def __call__(self, state):\n        return self.wait\n\n\nclass wait_random(wait_fixed):\n"
    assert named_answer("Which class does wait_random extend?", "wait_random.", [init, doc, before], runs.get) == (
        "wait_fixed (pkg/wait.py)", [before, init, doc])
    # ... and when no run read is labelled for it: the question's identifier names the place
    other = Citation("pkg/retry.py", 5, 9, 0.1, (12,), "retry_base")
    runs[other] = "class retry_base(abc.ABC):\n    pass\n"
    assert named_answer("Which class does wait_random extend?", "wait_fixed.__call__", [before, other], runs.get) == (
        "wait_fixed (pkg/wait.py)", [before, other])
    # names a definition's text refers to: what it calls and extends, not builtins, its own name or variables
    body = textwrap.dedent("""\
        class Spec(Base, mixins.Sized):
            def from_lines(cls, factory, lines):
                if isinstance(factory, str):
                    use = util.lookup_pattern(factory)
                return cls([use(line) for line in lines], make_backend())
        """)
    assert [name for name, _, _ in referred_names("symbol", body)] == ["Base", "Sized", "lookup_pattern",
                                                                        "make_backend"]
    # a class that only holds the answer ("Which Spec method ...") is not asked about
    spec = Citation("pkg/spec.py", 1, 9, 0.9, (4,), "Spec")
    walk = Citation("pkg/spec.py", 20, 29, 0.5, (5,), "Spec.walk")
    holder = {spec: "class Spec(Base):\n    def __init__(self):\n        self.tree = make_tree(self)\n"}
    assert named_answer("Which Spec method walks the tree?", "None.", [spec, walk], holder.get)[0] == (
        "Spec.walk (pkg/spec.py)")
    # asked for a class, the methods the question names describe it: their class is the answer, not a name
    # their text uses
    hbox = Citation("pkg/notebook.py", 73, 89, 0.8, (20,), "TqdmHBox._json_")
    members = {hbox: "    def _json_(self):\n        return self.pbar.format_dict\n\n    def __repr__(self):\n"
                     "        return self.pbar.format_meter(**self._json_())\n\n    def _repr_pretty_(self, pp):\n"
                     "        pp.text(self.__repr__())\n"}
    question = "Which widget class formats the bar's meter in __repr__ and _repr_pretty_?"
    assert named_answer(question, "It is HBox.", [hbox], members.get) == ("TqdmHBox (pkg/notebook.py)", [hbox])
    both = {**holder, **members}
    assert named_answer(question, "TqdmHBox does.", [spec, hbox], both.get) == ("TqdmHBox does.", [hbox, spec])


def test_a_question_about_a_quoted_term_is_answered_with_its_definition():
    recital = Citation("act.txt", 5, 9, 0.6, (1,), "Recital 4")
    article_3 = Citation("act.txt", 40, 52, 0.4, (9,), "Article 3")
    text = {recital: "Manufacturers should keep a 'software bill of materials' up to date.",
            article_3: "(38) 'software' means computer code;\n(39) ‘software bill of materials’ means a formal "
                       "record containing details\nand supply chain relationships of components;\n"
                       "(40) 'major incident' means an incident with a high adverse impact;"}
    cites = [recital, article_3]
    definition = "‘software bill of materials’ means a formal record containing details and supply chain " \
                 "relationships of components;"
    for question in ("What is a 'software bill of materials'?", "How does the Regulation define a ‘software "
                     "bill of materials’?"):
        # the definition, whole, from the run that gives it, which is cited first; not the shorter 'software'
        assert defined_answer(question, "It is a list.", cites, text.get) == (definition, [article_3, recital])
    for question in ("What counts as 'major'?", "What are 'major incidents'?"):  # a term holding it, a plural
        assert defined_answer(question, "", cites, text.get)[0].startswith("'major incident' means")
    # a quoted term in a question that asks something else, or a term the read text does not define
    for question in ("How often must manufacturers update the 'software bill of materials'?",
                     "What is a 'product'?", "Which Article defines 'software'?"):
        assert defined_answer(question, "Yearly.", cites, text.get) == ("Yearly.", cites)


def test_a_question_asking_for_a_quantity_is_answered_with_the_read_sentence_that_states_it():
    article_14 = Citation("act.txt", 30, 36, 0.7, (4,), "Article 14")
    article_64 = Citation("act.txt", 90, 94, 0.3, (12,), "Article 64")
    text = {article_14: "(b) an incident notification, within 72 hours of becoming aware of the incident;\n"
                        "(c) a final report, no later than 14 days after a corrective or\nmitigating measure is "
                        "available, including a description;",
            article_64: "Infringements shall be subject to fines of up to EUR 15 000 000 or up to 2,5 % of the "
                        "total worldwide annual turnover, whichever is higher."}
    cites = [article_14, article_64]
    question = "How long does a manufacturer have to send its final report once a mitigating measure is available?"
    # the duration whose sentence holds the question's words, not the first one read
    answer, cited = quantity_answer(question, "A limited period of time.", cites, text.get)
    assert answer == ("(c) a final report, no later than 14 days after a corrective or mitigating measure is "
                      "available, including a description;")
    assert cited == cites
    amount = "Up to what amount in euros can a manufacturer be fined?"
    assert quantity_answer(amount, "Up to EUR 100 000.", cites, text.get) == (
        "Infringements shall be subject to fines of up to EUR 15 000 000 or up to 2,5 % of the total worldwide "
        "annual turnover, whichever is higher.", [article_64, article_14])
    # a reply giving a quantity the read text states is kept, with the run stating it cited first; so is the
    # reply to any other question
    assert quantity_answer(question, "Within 14 days.", cites, text.get) == ("Within 14 days.", cites)
    assert quantity_answer(amount, "Up to EUR 15 000 000.", cites, text.get) == (
        "Up to EUR 15 000 000.", [article_64, article_14])
    assert quantity_answer("Who sends the final report?", "The manufacturer.", cites, text.get) == (
        "The manufacturer.", cites)
    # no read sentence states a date: the reply stands
    assert quantity_answer("From what date does it apply?", "Soon.", cites, text.get) == ("Soon.", cites)
    # other ways of asking how long; "how much time" asks for no amount, "what term" for no duration
    for asked in ("How much time does a manufacturer have for its final report once a measure is available?",
                  "What is the latest a manufacturer may send its final report once a measure is available?",
                  "By when must the final report be sent once a mitigating measure is available?"):
        assert quantity_asked(asked) == "duration"
        assert "14 days" in quantity_answer(asked, "Soon.", cites, text.get)[0]
    # a question naming its unit takes a quantity in that unit: not the reply's days, nor the first duration read
    weeks = Citation("act.txt", 60, 62, 0.5, (8,), "Article 31")
    text[weeks] = "The provider may, within 6 weeks of the notification, submit a reasoned statement."
    in_weeks = "Within how many weeks of the notification may the provider submit a reasoned statement?"
    assert quantity_answer(in_weeks, "Within 14 days.", [*cites, weeks], text.get) == (
        text[weeks], [weeks, *cites])
    assert quantity_answer(in_weeks, "Within 6 weeks.", [*cites, weeks], text.get) == (
        "Within 6 weeks.", [weeks, *cites])
    assert quantity_asked("For what term is a member of the board appointed?") == "duration"
    assert quantity_asked("What term does Article 3 define?") is None


def test_a_reply_that_says_nothing_is_replaced_by_the_read_sentence_that_holds_the_question_words():
    article_13 = Citation("act.txt", 30, 36, 0.7, (4,), "Article 13")
    article_19 = Citation("act.txt", 90, 94, 0.3, (12,), "Article 19")
    text = {article_19: "Importers shall check the product before placing it on the market.",
            article_13: "The product shall be placed on the market with its support period.\nManufacturers "
                        "shall give the end date of the support period, including at least the month and the "
                        "year. Where feasible, the product shall display a notice."}
    cites = [article_19, article_13]
    question = "Which parts of the end date of a product's support period must at least be given?"
    sentence = "Manufacturers shall give the end date of the support period, including at least the month and " \
               "the year. Where feasible, the product shall display a notice."  # short: the next one joins it
    for empty in ("The answer is:", "", "Answer:"):
        assert passage_answer(question, empty, cites, text.get) == (sentence, [article_13, article_19])
    assert passage_answer(question, "The month.", cites, text.get) == ("The month.", cites)


def test_a_reply_whose_words_the_read_prose_does_not_hold_is_replaced_by_the_read_sentence():
    article_21 = Citation("act.txt", 40, 44, 0.6, (5,), "Article 21")
    article_3 = Citation("act.txt", 9, 12, 0.4, (1,), "Article 3")
    text = {article_21: "An importer or distributor shall be considered to be a manufacturer where it places a "
                        "product on the market under its name or trademark.",
            article_3: "'importer' means a person established in the Union. 'distributor' means a person in the "
                       "supply chain."}
    cites = [article_21, article_3]
    question = "In which situations is an importer or a distributor regarded as the manufacturer?"
    priors = "It lies in Article 20 of the Law on the Protection of Consumer Goods."
    assert passage_answer(question, priors, cites, text.get) == (text[article_21], cites)
    # a reply the read text bears out stands ("The answer is" is no word of its own)
    founded = "When it places a product on the market under its name or trademark."
    assert passage_answer(question, founded, cites, text.get) == (founded, cites)
    assert passage_answer(question, "The answer is: trademark", cites, text.get)[0] == "The answer is: trademark"
    # a reply that only restates the question says nothing either; a short one ("Yes.") stands
    echo = "An importer or a distributor is regarded as the manufacturer."
    assert passage_answer(question, echo, cites, text.get) == (text[article_21], cites)
    assert passage_answer("Is an importer a manufacturer?", "Yes.", cites, text.get)[0] == "Yes."
    # a question that asks for a name is the named answer's; code is never quoted for a reply
    assert passage_answer("Which Article says so?", priors, cites, text.get)[0] == priors
    code = [Citation("pkg/a.py", 1, 9, 0.5, (3,), "f", code=True)]
    assert passage_answer(question, priors, code, lambda c: "def f(importer): return distributor")[0] == priors


def test_the_run_holding_the_words_of_a_reply_is_cited_first():
    init = Citation("pkg/hs/gitignore.py", 171, 188, 0.5, (3,), "GiBackend._init_db")
    flags = Citation("pkg/hs/_base.py", 18, 41, 0.4, (8,), "")
    cites = [init, flags]
    text = {init: "    def _init_db(self, patterns):\n        db = hyperscan.Database()\n"
                  "        db.compile(expressions=exprs, flags=HS_FLAGS)\n",
            flags: "HS_FLAGS = (\n    hyperscan.HS_FLAG_SINGLEMATCH\n    | hyperscan.HS_FLAG_UTF8\n)\n"}
    question = "Which hyperscan flags are used when the expressions are compiled?"
    reply = "The flags are HS_FLAG_SINGLEMATCH and HS_FLAG_UTF8."
    assert supported_answer(question, reply, cites, text.get) == (reply, [flags, init])
    # a reply whose words the top run holds as well keeps the order; so does a question that asks for a name
    assert supported_answer(question, "The flags given to compile.", cites, text.get) == (
        "The flags given to compile.", cites)
    assert supported_answer("Which function compiles the expressions?", reply, cites, text.get) == (reply, cites)


def test_the_definition_of_a_quoted_term_is_read_and_given_as_the_answer(corpus):
    definition = corpus.index.blocks_for("rules.txt", 14, 14)[0]
    # the index's defined term is read in every layer when its meaning is asked, not when it is only quoted
    assert definition in name_pins(corpus.index, "What does 'lamp' mean?", 3)
    assert definition not in name_pins(corpus.index, "Who keeps a register of each repaired 'lamp'?", 3)
    # a quoted word that only a longer defined term holds: that term, when the question has all its words
    registered = corpus.index.blocks_for("rules.txt", 16, 16)[0]
    assert registered in name_pins(corpus.index, "When is a lamp 'registered' in the sense of this Act?", 3)
    assert name_pins(corpus.index, "What does 'registered' mean?", 3) == []
    answer = corpus.ask("What does 'lamp' mean?", max_new_tokens=2)
    assert answer.text == "'lamp' means any device that gives light;"
    assert (answer.citations[0].source, answer.citations[0].label) == ("rules.txt", "Article 2")


def test_a_function_a_read_definition_calls_answers_which_function_it_uses(corpus):
    answer = corpus.ask("Which function does parcel_cost call to get the surcharge?", max_new_tokens=2)
    assert answer.citations[0].label == "parcel_cost"
    assert answer.text == "zanzibar_tariff (ship.py)"


def test_a_named_definition_is_pinned_with_its_heading_and_the_block_that_matches_the_question(corpus):
    question = "Which tariff does parcel_cost apply to the total?"
    limit = corpus.memory.settings.max_read_blocks
    (hit,) = corpus.index.find_symbol("parcel_cost")[:1]
    body = {b: corpus.memory.block_texts([b])[b] for b in hit.blocks}
    tariff = next(b for b, text in body.items() if "tariff" in text)
    assert len(hit.blocks) > 3 and tariff not in hit.blocks[:2]  # far into the body
    assert name_pins(corpus.index, question, limit) == hit.blocks[:2]  # without a ranking: the first two
    ranked = name_pins(corpus.index, question, limit, corpus.memory.lexical)
    assert ranked == [hit.blocks[0], tariff]


def test_a_looping_reply_is_cut_where_it_repeats():
    assert without_repeats("It returns a list.\nIt returns a list.\nIt returns a list.") == "It returns a list."
    assert without_repeats("Red lamps. Blue? Red lamps.") == "Red lamps. Blue?"
    first = "It holds the states of the\ncold tier. It is a copy of the top of the cold tier."
    assert without_repeats(first + " It is a copy of\nthe top of the cold tier. It is a copy") == first  # wrapped
    assert without_repeats("1. One thing.\n1.1 Another thing.") == "1. One thing.\n1.1 Another thing."
    assert without_repeats("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert without_repeats("It is fast, high-performance, high-performance, high-performance, high") == (
        "It is fast, high-performance")
    assert without_repeats("a list of 1, 2, 3 and 4") == "a list of 1, 2, 3 and 4"
    assert without_repeats("ha ha ha") == "ha ha ha"  # too short to be a loop
    assert without_repeats("a fine of EUR 1 000 000 000 000") == "a fine of EUR 1 000 000 000 000"
    assert without_repeats("The the the the the cat") == "The the"  # never cut inside a word


def test_a_store_keeps_its_reading_head_and_reads_after_it(tmp_path, tiny):
    head = reading_head(tiny.tokenizer)
    mem = Memory.create(tmp_path / "s", tiny, MemorySettings(**SETTINGS, reading_head=head))
    mem.ingest_document(LEGAL, "rules.txt")
    expected = mem.logits([5, 6, 7], pins=mem.blocks_for("rules.txt")[:2])
    mem.close()
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["settings"]["reading_head"] == head
    again = Memory.open(tmp_path / "s", tiny)
    assert again.settings.reading_head == head
    assert torch.equal(again.logits([5, 6, 7], pins=again.blocks_for("rules.txt")[:2]), expected)
    bare = Memory.create(tmp_path / "bare", tiny, MemorySettings(**SETTINGS))
    assert bare.settings.reading_head == ""


def test_reread_puts_the_best_cited_blocks_before_the_question_as_text_within_its_budget(corpus, monkeypatch):
    memory = corpus.memory
    tails = []
    prefill = memory._prefill

    def spy(tail, *args):
        tails.append(memory.tokenizer.decode(tail))
        return prefill(tail, *args)

    monkeypatch.setattr(memory, "_prefill", spy)
    question = "What does zanzibar_tariff get?"
    corpus.ask(question, max_new_tokens=2)
    assert len(tails) == 1 and "zanzibar" not in tails[0].split("Question:")[0]
    memory.settings = memory.settings.replace(reread_tokens=32)
    tails.clear()
    answer = corpus.ask(question, max_new_tokens=2)
    assert len(tails) == 2
    passage = tails[1].split("Question:")[0]
    top = answer.citations[0]
    assert f"[{top.source}:" in passage and "surcharge = zanzibar_tariff(total)" in passage
    assert "parcel_cost" in passage  # the header names the definition the text lies in
    assert passage.count("\n[") <= 32 // 16  # 32 tokens of 16-token blocks: two blocks at most


def test_read_time_overrides_reach_a_store_opened_by_path_or_by_store(corpus, tiny):
    store, root = corpus.memory.files.path, corpus.root
    corpus.close()
    for opened in (Agent.open(root, store, tiny, create=False, overrides={"reread_tokens": 96}),
                   Agent.from_store(store, tiny, overrides={"reread_tokens": 96})):
        with opened:
            assert opened.memory.settings.reread_tokens == 96
    # what shapes the stored states cannot change on opening (reading after a head the blocks were not
    # written after would answer from the wrong states, silently)
    with pytest.raises(L2MError, match="reading_head; these settings shape what is stored"):
        Agent.from_store(store, tiny, overrides={"reading_head": "Context:\n"})
    with Agent.from_store(store, tiny, overrides={"codec": corpus.memory.settings.codec}) as same:
        assert same.memory.meta


def test_question_likelihoods_score_each_passage_as_if_alone(tiny):
    passages = ["Lamps are kept in a register.", "The owners report broken lamps to the authority at once, "
                "with the name of the repairer and the seal that was applied."]
    question = "Who keeps the register?"
    together = question_likelihoods(tiny.model, tiny.tokenizer, passages, question)
    alone = [question_likelihoods(tiny.model, tiny.tokenizer, [p], question)[0] for p in passages]
    assert together == pytest.approx(alone, abs=1e-4)  # left padding changes no passage's score
    # the mean log-probability of the question's tokens after the prompt, computed by hand for one passage
    tok = tiny.tokenizer
    prompt = tok(f"Passage: {passages[0]}\n\nPlease write a question based on this passage.\nQuestion:",
                 add_special_tokens=False).input_ids
    q = tok(" " + question, add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = tiny.model(torch.tensor([prompt + q])).logits[0, len(prompt) - 1:-1].float()
    by_hand = torch.log_softmax(logits, -1)[torch.arange(len(q)), torch.tensor(q)].mean()
    assert together[0] == pytest.approx(float(by_hand), abs=1e-4)


def _scores_later_runs_higher(calls: list):
    def scores(model, tokenizer, passages, question):  # the later a run came, the better it explains the question
        calls.append(passages)
        return [float(i) for i in range(len(passages))]
    return scores


def test_the_first_citations_are_ordered_by_how_well_they_explain_the_question(tmp_path, tiny, monkeypatch):
    (tmp_path / "rules.txt").write_text(LEGAL)
    # the tiny model's two-token reply says nothing, which would cite the run of the answering sentence first
    monkeypatch.setattr("l2m_core.memory.passage_answer", lambda question, reply, cites, text_of: (reply, cites))
    # BM25's order decides what is read (`address_pool` 0): the stand-in scorer below orders citations only
    settings = MemorySettings(**{**SETTINGS, "max_read_blocks": 12, "lexical_top_k": 6, "rerank_citations": 0,
                                 "address_pool": 0})
    with Agent.open(tmp_path, tmp_path / "store", tiny, settings=settings) as agent:
        agent.ingest()
        question = "Which register holds the quince-coloured seal of the repairer and the date of the repair?"
        plain = agent.ask(question, max_new_tokens=2).citations
        assert len(plain) >= 3
        scored: list = []
        monkeypatch.setattr("l2m_core.memory.question_likelihoods", _scores_later_runs_higher(scored))
        agent.memory.settings = agent.memory.settings.replace(rerank_citations=2)
        assert agent.ask(question, max_new_tokens=2).citations == [plain[1], plain[0], *plain[2:]]
    # each run is scored as its whole lines under its citation
    first = scored[0][0]
    assert first.startswith(f"[{plain[0]}]\n")
    assert len(first.splitlines()) == 1 + plain[0].line_end - plain[0].line_start + 1


def test_runs_of_code_keep_their_addressing_order(corpus, monkeypatch):
    memory = corpus.memory
    memory.settings = memory.settings.replace(max_read_blocks=12, lexical_top_k=6, rerank_citations=0)
    question = "What does parcel_cost add to the total as surcharge from zanzibar_tariff?"
    plain = corpus.ask(question, max_new_tokens=2).citations
    assert plain[0].source == "ship.py" and len(plain) >= 2
    scored: list = []
    monkeypatch.setattr("l2m_core.memory.question_likelihoods", _scores_later_runs_higher(scored))
    memory.settings = memory.settings.replace(rerank_citations=3)
    assert corpus.ask(question, max_new_tokens=2).citations == plain and not scored


def test_a_function_asked_for_by_what_it_does_is_answered_with_the_run_that_best_explains_it(tmp_path, tiny,
                                                                                           monkeypatch):
    (tmp_path / "post.py").write_text("".join(
        f"def {name}(parcel):\n    \"\"\"Handle the parcel at the {name} desk.\"\"\"\n    return parcel + {i}\n\n\n"
        for i, name in enumerate(["stamp", "weigh", "route", "wrap"])))
    settings = MemorySettings(**{**SETTINGS, "max_read_blocks": 12, "lexical_top_k": 6})
    question = "Which function handles the parcel at its desk?"
    with Agent.open(tmp_path, tmp_path / "store", tiny, settings=settings) as agent:
        agent.ingest()
        monkeypatch.setattr("l2m_core.memory.question_likelihoods",
                            lambda model, tokenizer, passages, q: [-float(i) for i in range(len(passages))])
        plain = agent.ask(question, max_new_tokens=2)
        scored: list = []
        monkeypatch.setattr("l2m_core.memory.question_likelihoods", _scores_later_runs_higher(scored))
        later = agent.ask(question, max_new_tokens=2)
    first, third = plain.citations[0], plain.citations[2]
    assert plain.text == f"{first.label} (post.py)" and first.label != third.label
    # the third of the places read explains the question best: it answers, cited first
    assert later.text == f"{third.label} (post.py)" and later.citations[0] == third
    assert len(scored) == 1 and len(scored[0]) == 3 and scored[0][2].startswith(f"[{third}]\n")


PREAMBLE = textwrap.dedent('''\
    REGULATION ON LAMPS

    Whereas:

    (1) Owners of broken lamps should report broken lamps to the authority soon, since broken lamps left
    unreported in public buildings are a danger, and the authority should hear of broken lamps early.

    (2) This Regulation should apply from the day after its publication.

    HAVE ADOPTED THIS REGULATION:

    Article 1
    Reports

    1. The owner shall report a broken lamp to the authority within seven days of finding it broken, and shall
    keep a copy of that report in the register of the public building concerned for two years.

    Article 2
    Register

    The register shall be kept in the public building and shown to the authority on request.

    Article 3
    Entry into force

    This Regulation shall enter into force on the day following that of its publication.
''')


def test_a_recital_that_restates_an_article_does_not_displace_it_unless_reasons_are_asked(tmp_path, tiny):
    (tmp_path / "lamps.txt").write_text(PREAMBLE)
    settings = MemorySettings(**{**SETTINGS, "block_size": 32, "chunk_size": 64, "sink": 32})
    with Agent.open(tmp_path, tmp_path / "store", tiny, settings=settings) as agent:
        agent.ingest()
        memory = agent.memory

        def first_hit(question: str) -> str:  # the label of the block addressing puts first
            hit = memory._hits(question)[0]
            return memory._labels([hit])[hit]

        question = "How soon must the owner report broken lamps to the authority?"
        plain = memory.lexical.top(question, 1)  # BM25 alone: the recital repeats the question's words
        assert memory._labels(plain)[plain[0]] == "Recital 1"
        assert first_hit(question) == "Article 1"
        assert agent.ask(question, max_new_tokens=2).citations[0].label == "Article 1"
        assert first_hit("Why should owners report broken lamps to the authority soon?") == "Recital 1"


def test_an_asked_exception_is_one_the_read_text_raises_and_a_file_extension_is_no_file():
    parse = Citation("pkg/utils.py", 202, 306, 0.9, (7,), "parse_wheel_filename")
    body = {parse: "    parts = filename.split('-', dashes - 2)\n    try:\n        version = Version(parts[1])\n"
                   "    except InvalidVersion as e:\n        raise InvalidWheelFilename(\n"
                   "            f'Invalid wheel filename (invalid version part): {filename!r}'\n        ) from e\n"}
    question = "Which exception does parse_wheel_filename raise when the version part is not a valid version?"
    assert named_answer(question, "ValueError.", [parse], body.get)[0] == "InvalidWheelFilename (pkg/utils.py)"
    # "what file extension" asks for an extension: the reply stays
    assert asks_for("What file extension must a wheel's filename end with?") is None
    assert asks_for("What file-name pattern does the lock give each claim file?") is None
    assert asks_for("In which file is the wheel's filename parsed?") == "file"


def test_a_store_kept_inside_the_corpus_under_any_name_is_not_ingested(tmp_path, tiny):
    (tmp_path / "rules.txt").write_text(LEGAL)
    with Agent.open(tmp_path, tmp_path / "answers-store", tiny, settings=MemorySettings(**SETTINGS)) as agent:
        agent.ingest()
        agent.ingest()  # the second pass finds the store's manifest.json written by the first
        assert {meta.source for meta in agent.memory.meta.values()} == {"rules.txt"}


PENALTIES = textwrap.dedent('''\
    Article 1
    Register

    1. The owners shall keep a register of every lamp that has been repaired, with the quince-coloured seal
    that the repairer applied.

    Article 2
    Reports

    1. The owners shall report broken lamps to the authority that the Member State has designated.

    Article 3
    Penalties

    1. Member States shall lay down the rules on penalties applicable to infringements of this Regulation.

    2. Non-compliance with the obligations set out in Article 1 shall be subject to administrative fines of up
    to EUR 40 000.
''')


def test_an_amount_the_read_text_does_not_state_is_read_where_its_article_is_referred_to(tmp_path, tiny):
    (tmp_path / "lamps.txt").write_text(PENALTIES)
    settings = MemorySettings(**{**SETTINGS, "block_size": 32, "chunk_size": 64, "sink": 32, "max_read_blocks": 10})
    with Agent.open(tmp_path, tmp_path / "store", tiny, settings=settings) as agent:
        agent.ingest()
        memory = agent.memory
        fines = agent.index.blocks_for("lamps.txt", 17, 18)  # Article 3(2)
        question = "Up to what amount can an owner without a register of the quince-coloured seal be fined?"
        memory.referrers = None  # as before: only what addressing found is read
        alone = agent.ask(question, max_new_tokens=2)
        assert alone.citations[0].label == "Article 1"
        assert not any(set(fines) & set(ids) for ids in alone.read_set.values()) and "EUR" not in alone.text
        memory.referrers = agent.index.referrers
        answer = agent.ask(question, max_new_tokens=2)
        assert "up to EUR 40 000" in answer.text
        assert answer.citations[0].label == "Article 3" and answer.citations[0].line_start <= 17
        assert all(set(fines) <= set(ids) for ids in answer.read_set.values())
        # a question that asks for no amount, or one whose read text states one, is read once
        assert agent.index.referrers(memory.blocks_for("lamps.txt", 4, 5)) == [fines]
        assert memory._stating_referrers("Which register must the owners keep?", alone, memory._run_text) == []
        assert memory._stating_referrers(question, answer, memory._run_text) == []
