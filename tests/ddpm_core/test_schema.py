"""ddpm_core.schema: every hand-editable JSON file is read with a size limit and checked field by field, and a
refusal names the file and the field; run.json's schema follows ``Settings`` and latest.json's the records a
run writes (issue 25)."""
from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest

from ddpm_core import schema
from ddpm_core.errors import RunError, UserError
from ddpm_core.training.run_folder import check_latest
from ddpm_core.training.settings import RUN_SCHEMA, Settings

RECORD = {"step": 2, "checkpoint": "checkpoints/step_000000002.pt", "bytes": 10, "sha256": "a" * 64}
SETTINGS = Settings(framework="torch", data="d", data_format="fashion-mnist", image_size=8, channels=1, workers=0,
                    epochs=1, max_steps=None, save_every=1, keep=2, seed=0, batch_size=4, lr=1e-4, min_lr=1e-7, dim=8,
                    dim_mults=(1, 2), timesteps=10, schedule="linear", loss="huber", compile="off",
                    init_weights=None, no_progress=True, examples=12)


def refusal(value, check) -> str:
    with pytest.raises(UserError) as info:
        schema.check(value, check, "f.json")
    return str(info.value)


@pytest.mark.parametrize("value, check, says", [
    (True, schema.integer(), "f.json: expected an integer, got true"),
    (-1, schema.integer(0), "f.json: expected an integer >= 0, got -1"),
    (2.5, schema.integer(), "f.json: expected an integer, got 2.5"),
    (float("nan"), schema.number(), "f.json: expected a finite number, got nan"),
    ("1e-4", schema.number(), 'f.json: expected a finite number, got a string ("1e-4")'),
    (1, schema.boolean(), "f.json: expected true or false, got 1"),
    ("sgd", schema.string(("adam",)), 'f.json: expected one of adam, got "sgd"'),
    ("12", schema.list_of(schema.integer(1)), 'f.json: expected a list, got a string ("12")'),
    ([1, 0], schema.list_of(schema.integer(1)), "f.json: [1]: expected an integer >= 1, got 0"),
    ({"a": 1, "b": 2}, schema.obj({"a": schema.integer()}), "f.json: b: unknown field (known: a)"),
    ({}, schema.obj({"a": schema.integer()}), "f.json: a: missing"),
    ({"a": {"b": [1, "x"]}}, schema.obj({"a": schema.obj({"b": schema.list_of(schema.integer())})}),
     'f.json: a.b[1]: expected an integer, got a string ("x")'),
    ({"w": "beef"}, schema.dict_of(schema.string(pattern="[0-9a-f]{64}")), 'f.json: w: "beef" is not of the form'),
])
def test_each_check_names_the_field_and_what_it_found(value, check, says):
    assert refusal(value, check).startswith(says)


def test_a_value_that_fits_is_returned_unchanged():
    value = {"a": [1, 2], "b": None}
    assert schema.check(value, schema.obj({"a": schema.list_of(schema.integer())},
                                          {"b": schema.optional(schema.string())}), "f") is value


def test_files_are_read_with_a_limit_and_each_problem_names_the_file(tmp_path):
    path = tmp_path / "f.json"
    for text, says in ((b"[" * 50000 + b"]" * 50000, "nested too deeply"), (b"\xff", "not UTF-8"),
                       (b'{"a": }', "not valid JSON (Expecting value at line 1 column 7)"),
                       (b" " * (schema.JSON_LIMIT + 1), f"larger than {schema.JSON_LIMIT} bytes")):
        path.write_bytes(text)
        with pytest.raises(RunError, match=f"^{re.escape(str(path))}: .*{re.escape(says)}"):
            schema.load_json(path, RunError)
    with pytest.raises(RunError, match=f"{tmp_path}: cannot read"):
        schema.load_json(tmp_path, RunError)
    if os.path.exists("/dev/zero"):
        with pytest.raises(UserError, match="larger than 1048576 bytes"):
            schema.load_json("/dev/zero")


def test_run_json_follows_the_settings_and_what_a_run_writes_fits():
    """The schema is made from ``Settings``' fields (no list to keep in step): a field added there is required
    here, and run.json as a run writes it passes."""
    schema.check(SETTINGS.to_json(), RUN_SCHEMA, "run.json")
    old = {k: v for k, v in SETTINGS.to_json().items() if k not in ("examples", "tape_version", "flip")}
    schema.check(old, RUN_SCHEMA, "run.json")  # run folders from before those fields existed
    required = [f.name for f in dataclasses.fields(Settings) if f.default is dataclasses.MISSING]
    for name in required:
        d = SETTINGS.to_json()
        del d[name]
        assert refusal(d, RUN_SCHEMA) == f"f.json: {name}: missing"
    for name, bad in (("dim_mults", "12"), ("keep", 0), ("seed", True), ("framework", "jax"), ("max_steps", -1)):
        assert refusal(dict(SETTINGS.to_json(), **{name: bad}), RUN_SCHEMA).startswith(f"f.json: {name}: ")


def test_latest_json_records_are_checked(tmp_path):
    latest = {**RECORD, "framework": "torch", "checkpoints": [RECORD]}
    assert check_latest(json.loads(json.dumps(latest)), tmp_path / "latest.json") == latest
    assert check_latest({"step": 0, "checkpoint": None, "checkpoints": []}, tmp_path)["step"] == 0
    for bad, says in ((dict(latest, checkpoint="../model.pt"), "checkpoint: "),
                      (dict(latest, checkpoints=[dict(RECORD, bytes=-1)]), "checkpoints[0].bytes: "),
                      ({k: v for k, v in latest.items() if k != "sha256"}, "sha256: missing")):
        with pytest.raises(RunError, match=f"^{re.escape(str(tmp_path / 'latest.json'))}: {re.escape(says)}"):
            check_latest(bad, tmp_path / "latest.json")
