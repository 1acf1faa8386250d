"""Pieces of the study's report that need no study: the summary's Markdown as HTML, settings in words."""

from randsae.study.page import markdown_html
from randsae.study.report import given_settings, made_by


def test_summary_tables_render_as_html_tables_and_everything_is_escaped():
    page = markdown_html("| model | variant | <b> |\n|---|---|---|\n| m | trained | 0.5 |\n\nA note <i>.\n\n"
                         "- one\n- two\n")
    assert page.count("<table>") == 1 and "<th>model</th>" in page and "<td>trained</td>" in page
    assert "---" not in page and "|" not in page
    assert "&lt;b&gt;" in page and "<p>A note &lt;i&gt;.</p>" in page
    assert "<ul><li>one</li><li>two</li></ul>" in page


def test_settings_in_words_and_provenance():
    assert given_settings({}, "the paper's") == "the paper's"
    assert given_settings({"sample": 24, "scorers": ["tokens", "embedding"]}, "x") == \
        "sample 24; scorers tokens, embedding (the rest the paper's)"
    assert made_by({}).startswith("not recorded")
    line = made_by({"provenance": {"randsae": "0.1.0", "commit": "abc", "torch": "2.13.0",
                                   "written": "2026-11-30", "command_line": "randsae baseline --preset demo"}})
    assert line == "randsae 0.1.0 at commit abc, PyTorch 2.13.0, 2026-11-30: randsae baseline --preset demo"
