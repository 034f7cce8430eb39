"""One resume vocabulary: ``--resume [FILE]`` / ``--no-resume`` in alphanet-search, -train and -finetune
(`alphanet_zoo.commands.flags.resume_flags`), the old spellings included."""
from __future__ import annotations

import json

import pytest

from alphanet_zoo.commands import finetune, flags, search, train
from alphanet_zoo.errors import UsageError

REQUIRED = {search: ["--out", "o.json"], train: [], finetune: ["--out", "o", "--data", "d"]}
DEFAULT = {search: False, train: True, finetune: True}  # search starts afresh, training continues


@pytest.mark.parametrize("command", list(REQUIRED), ids=lambda c: c.__name__.rsplit(".", 1)[-1])
def test_every_command_takes_the_same_resume_flags(command):
    def resume(*argv: str):
        args = command._parser().parse_args([*REQUIRED[command], *argv])
        return flags.resume_choice(args, DEFAULT[command]), args

    assert resume()[0] is DEFAULT[command]
    assert resume("--resume")[0] is True and resume("--no-resume")[0] is False
    assert resume("--resume", "run/checkpoint.pt")[0] == resume("--resume=run/checkpoint.pt")[0] == "run/checkpoint.pt"
    with pytest.raises(UsageError, match="not allowed with argument"):
        resume("--resume", "--no-resume")


@pytest.mark.parametrize("command", [train, finetune], ids=["train", "finetune"])
def test_resume_before_a_key_value_setting_takes_no_file(command):
    args = command._parser().parse_args([*REQUIRED[command], "--resume", "epochs=3"])
    assert flags.resume_choice(args, True) is True and args.overrides == ["epochs=3"]


def _search(tmp_path, *extra):
    out = tmp_path / "front.json"
    code = search.main(["--front", "300:600:60", "--evaluator", "surrogate", "--seed", "1", "--max-evaluations", "24",
                        "--history", str(tmp_path / "h.jsonl"), "--out", str(out), *extra])
    return code, json.loads(out.read_text())


def test_search_resumes_with_resume_and_starts_afresh_with_no_resume(tmp_path, capsys):
    def said() -> str:
        printed = capsys.readouterr()
        return printed.out + printed.err

    code, first = _search(tmp_path)
    assert code == 0 and "resuming" not in said()
    code, resumed = _search(tmp_path, "--resume")
    assert code == 0 and "24 candidates already evaluated" in said() and resumed["bins"] == first["bins"]
    code, afresh = _search(tmp_path, "--no-resume")
    assert code == 0 and "resuming" not in said() and afresh["bins"] == first["bins"]
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 24  # rewritten, not appended to
