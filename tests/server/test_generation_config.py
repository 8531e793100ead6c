"""generation_config.json as the default sampling parameters (--generation-config auto, vLLM's
default): a model folder's max_new_tokens replaces the endpoint's default max_tokens, a request's
own max_tokens still wins, and --generation-config vllm ignores the file. Dummy weights from a
tiny config.json keep it cheap."""

import json
import subprocess

from conftest import LserveServer


def _bytes_to_unicode(b):
    # GPT-2's byte alphabet: printable bytes stand for themselves, the rest shift past 255.
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    if b in printable:
        return chr(b)
    return chr(256 + sorted(set(range(256)) - set(printable)).index(b))


def _model_folder(tmp_path, generation_config):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256,
        "vocab_size": 258, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": True}))
    vocab = {_bytes_to_unicode(b): b for b in range(256)}
    vocab["th"] = 256
    vocab["<|endoftext|>"] = 257
    (d / "tokenizer.json").write_text(json.dumps({
        "added_tokens": [{"id": 257, "content": "<|endoftext|>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["t h"]}}))
    (d / "generation_config.json").write_text(json.dumps(generation_config))
    return d


def _server(folder, *extra):
    s = LserveServer("--load-format", "dummy", *extra)
    s.args[2] = str(folder)  # the model positional
    return s


def _completion_tokens(server, **fields):
    status, body, _ = server.post("/v1/completions",
                                  {"prompt": "the theory", "ignore_eos": True, **fields})
    assert status == 200, body
    return json.loads(body)["usage"]["completion_tokens"]


def test_max_new_tokens_is_the_default_and_requests_override_it(tmp_path):
    folder = _model_folder(tmp_path, {"max_new_tokens": 5, "temperature": 0.0, "top_k": 1})
    with _server(folder) as s:
        assert _completion_tokens(s) == 5
        assert _completion_tokens(s, max_tokens=3) == 3
        assert any("generation_config.json: default sampling parameters" in line
                   for line in s.log_lines), s.log()


def test_vllm_mode_ignores_the_file(tmp_path):
    folder = _model_folder(tmp_path, {"max_new_tokens": 5})
    with _server(folder, "--generation-config", "vllm") as s:
        assert _completion_tokens(s) == 16  # OpenAI's default for completions


def test_a_bad_value_stops_the_server_naming_file_and_field(tmp_path):

    folder = _model_folder(tmp_path, {"top_p": "high"})
    s = _server(folder)
    r = subprocess.run(s.args, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "generation_config.json" in r.stderr and "'top_p'" in r.stderr, r.stderr
