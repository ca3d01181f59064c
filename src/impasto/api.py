"""The run API: the one way every front end (the CLI, the studio, the batch runner) starts work.

    job = api.prepare(api.Request("transfer", {"size": 256}, content="photo.jpg",
                                  styles=["painting.jpg"], output="out.png"))
    result = job.run(on_event=print, cancel=threading.Event())

``prepare`` checks everything a user or a file can get wrong before the first step and writes
nothing: the options (types and ranges, from the config), a record given with ``from_record``
(every field), the device, the network and its weights, every input file (a regular file, its
pixel count read from the header, decoded at no more than the size the run needs), and every
output (really writable, a format Pillow can write, never one of the inputs, never a file
impasto did not write unless ``overwrite``). A mistake is a ``UserError`` with one line.

``Job.run`` runs it with events (``PlanEvent`` once, ``StepEvent`` per step, ``DoneEvent``),
stops with the best image so far when ``cancel`` is set, and writes the image and its record
atomically. The front ends only turn their input into a ``Request`` and show the events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import config as config_mod, outputs, sources
from .config import INITS, MAX_INPUT_PIXELS, Config
from .errors import Cancelled, UserError


@dataclass
class Request:
    """One run, as a front end hands it in. Sources are file paths (str or Path), bytes (an
    upload), PIL images or tensors; only file paths end up in the run record."""
    task: str
    options: dict = field(default_factory=dict)    # Config options given (the rest: defaults)
    content: object = None
    styles: list = field(default_factory=list)
    mask: object = None                            # a colour-coded mask: a style per region
    region_styles: list = field(default_factory=list)   # [(colour, style source or None)]
    regions: Optional[list] = None     # or, from Python: [(mask (H, W) in [0, 1], [styles], blend)]
    init: object = None                # a start image (overrides the init option)
    output: Optional[str] = None                   # image file; None: nothing is written
    from_record: Optional[str] = None              # repeat this record (options given win)
    overwrite: bool = False                        # replace files impasto did not write
    save_every: int = 0                            # also write OUTPUT_stepN.png every N steps
    plot: bool = False                             # also write OUTPUT_loss.png (matplotlib)
    max_input_pixels: int = MAX_INPUT_PIXELS       # refuse inputs with more pixels than this
    argv: Optional[list] = None                    # the command, for the record
    started_at: Optional[float] = None             # perf_counter() at the front end's start:
                                                   # a --time budget counts from there


# ----------------------------------------------------------------------------- events
@dataclass
class PlanEvent:
    """Once, before the first step: what the run will do and what it will cost."""
    schedule: list          # [(long side, steps)], coarsest first
    output_hw: tuple
    precision: str
    device: str
    peak_bytes: float       # estimated peak memory, decoding the inputs included
    seconds: Optional[float]
    available_bytes: Optional[float]
    reads: list             # [(role, path)] every file the run reads
    tiles: list = field(default_factory=list)   # per scale: tile px, or None (untiled)
    history: int = 0        # L-BFGS history entries that fit the budget
    budget_bytes: Optional[float] = None
    step_seconds: list = field(default_factory=list)  # per scale: planned seconds of a step
    deep_style_scale: Optional[float] = None  # set when a --time budget lowered it
    kept_from: list = field(default_factory=list)  # per tiled scale: the first layer whose
    # tiles' graphs are kept from the statistics pass (not recomputed), or None
    reuse: list = field(default_factory=list)  # per scale: whether its steps keep freed memory
    compact_tails: list = field(default_factory=list)  # per scale: the stages' tails kept
    # compact ("conv3_2-pool3": their masks, not recomputed), see ``compact``
    tail_maps: list = field(default_factory=list)  # per scale: the layers read in early
    # tails, their maps kept whole ("relu2_1"), see ``tile_geometry.early_cut``
    kind: str = "plan"


@dataclass
class StepEvent:
    """After every step. ``image`` is the current image (a tensor on the run's device): a
    front end that shows previews encodes one only when it wants one."""
    step: int
    total_steps: int
    loss: float
    terms: dict
    elapsed: float
    scale: int              # index of the coarse-to-fine scale, coarsest 0
    side: int               # its long side
    scales: int
    image: object = None
    kind: str = "step"


@dataclass
class DoneEvent:
    result: object          # tasks.Result
    output: Optional[Path]
    record_path: Optional[Path]
    record: Optional[dict]
    kind: str = "done"

    @property
    def interrupted(self) -> bool:
        return self.result.outcome.stop_reason == "interrupted"


# ----------------------------------------------------------------------------- checks
def make_config(task: str, options: dict) -> Config:
    """The typed config of ``task`` from ``options`` (types, ranges, choices checked)."""
    if task not in config_mod.TASKS:
        raise UserError(f"unknown task '{task}' (use one of {', '.join(config_mod.TASKS)})")
    return Config.for_task(task, **options)


DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(name: str):
    """The torch device ``name`` names, if impasto can run on it (torch also knows meta,
    xla, vulkan ... devices, which this build of torch may not even support)."""
    from . import tasks
    device = tasks.resolve_device(name)
    if device.type not in DEVICE_TYPES:
        raise UserError(f"option --device: impasto does not run on '{device.type}' devices "
                        "(use auto, cpu, cuda, cuda:N or mps)")
    if device.type == "cuda" and device.index is not None:
        import torch
        count = torch.cuda.device_count()
        if device.index >= count:
            raise UserError(f"option --device: {name} asked for, but there "
                            f"{'is' if count == 1 else 'are'} {count} CUDA device"
                            f"{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1})")
    return device


def check_weights_file(path) -> None:
    """A --weights file: a regular file that can be read (a folder, FIFO or device is
    refused without opening it). Its content is checked when the network is built."""
    from . import image as imageio
    imageio.check_input_file(path, "--weights", noun="a weights file")


def check_network(cfg: Config, task: str) -> None:
    """The device, the precision, the layers and the network's weights, checked now."""
    from . import backbones, precision
    device = check_device(cfg.device)
    precision.resolve(cfg.precision, device)
    if cfg.weights:
        check_weights_file(cfg.weights)
    resolved = cfg.with_model_layers()
    if task in config_mod.field_tasks("content_layers"):
        backbones.check_layers(cfg.model, resolved.content_layers, "content-layers")
    if task in config_mod.field_tasks("style_layers"):
        backbones.check_layers(cfg.model, resolved.style_layers, "style-layers")
    if cfg.pooling != "max" and not backbones.spec(cfg.model).is_vgg:
        raise UserError(f"option --pooling: {cfg.pooling} pooling is for the VGG models only; "
                        f"{cfg.model} keeps its own pooling")
    backbones.check_available(cfg.model, cfg.weights)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _path_like(value) -> bool:
    import os
    return isinstance(value, (str, os.PathLike)) and not isinstance(os.fspath(value), bytes)


def check_request(request) -> None:
    """The Request's own fields have the types it documents (a front end's mistake, or a
    Python caller's, is one line too, never a traceback or a string taken apart)."""
    if not isinstance(request, Request):
        raise UserError(f"api.prepare takes an api.Request, got {type(request).__name__}")
    if not isinstance(request.task, str):
        raise UserError(f"Request.task: {request.task!r} is not a task name (use one of "
                        f"{', '.join(config_mod.TASKS)})")
    if not isinstance(request.options, dict):
        raise UserError("Request.options: give a dict of option names and values, got "
                        f"{type(request.options).__name__}")
    for key in request.options:
        if not isinstance(key, str):
            raise UserError(f"Request.options: the option name {key!r} is not a string")
    for name in ("styles", "region_styles"):
        if not isinstance(getattr(request, name), (list, tuple)):
            raise UserError(f"Request.{name}: give a list, got "
                            f"{type(getattr(request, name)).__name__}")
    for name, what in (("output", "-o"), ("from_record", "--from-record")):
        value = getattr(request, name)
        if value is not None and (not _path_like(value) or str(value) == ""):
            raise UserError(f"{what}: give a file name, got {value!r}")
    for name in ("overwrite", "plot"):
        if not isinstance(getattr(request, name), bool):
            raise UserError(f"Request.{name}: give True or False, got "
                            f"{getattr(request, name)!r}")
    if request.argv is not None and not (isinstance(request.argv, (list, tuple)) and all(
            isinstance(a, str) for a in request.argv)):
        raise UserError(f"Request.argv: give a list of strings or None, got {request.argv!r}")


def check_run_options(request: Request) -> None:
    check_request(request)
    if not _whole(request.save_every) or request.save_every < 0:
        raise UserError(f"option --save-every: must be zero or more, got {request.save_every}")
    if not _whole(request.max_input_pixels) or request.max_input_pixels < 1:
        raise UserError("option --max-input-pixels: must be a positive whole number, got "
                        f"{request.max_input_pixels}")
    if request.plot:
        from . import figures
        figures.require_plotting()


def _merge_record(request: Request):
    """(options, sources) from the request, filled in from its record when it has one."""
    from . import record as records
    options = dict(request.options)
    found = {"content": request.content, "styles": list(request.styles), "mask": request.mask,
             "region_styles": list(request.region_styles), "init": request.init,
             "regions": request.regions}
    if not request.from_record:
        return options, found
    rec = records.read(request.from_record)
    if rec["task"] != request.task:
        raise UserError(f"--from-record {request.from_record}: the record is of an 'impasto "
                        f"{rec['task']}' run, not '{request.task}'")
    merged = dict(rec["options"])
    merged.update(options)
    if "model" in options:
        sources.layers_for_model(merged, options)
    inputs = rec.get("inputs", {})        # each source not given comes from the record
    if found["content"] is None:
        found["content"] = inputs.get("content")
    if not found["styles"]:
        found["styles"] = list(inputs.get("styles") or [])
    if found["mask"] is None:
        found["mask"] = inputs.get("mask")
    if not found["region_styles"]:
        found["region_styles"] = [tuple(r) for r in inputs.get("region_styles") or []]
    if merged.get("init") not in INITS and "init" not in options and request.init is None:
        found["init"] = inputs.get("init")      # the record's init file, relative to it
    return merged, found


def input_files(request: Request, cfg: Config, spec) -> dict:
    """{role: path} of every file the run reads, which no output may be: the images, the
    record it repeats and the weights file."""
    files = spec.input_paths()
    if request.from_record is not None:
        files["record it repeats (--from-record)"] = Path(request.from_record)
    if cfg.weights:
        files["--weights file"] = Path(cfg.weights)
    return files


def prepare(request: Request, *, check_outputs: bool = True, cache: dict | None = None) -> "Job":
    """Every check of ``request``, its inputs decoded: a Job ready to run. Writes nothing.

    ``check_outputs=False`` leaves the output to the caller (a sweep checks its folder once);
    ``cache`` ({(source, long side): image}) lets several jobs share decoded inputs."""
    check_run_options(request)
    options, found = _merge_record(request)
    cfg = make_config(request.task, options)
    check_network(cfg, request.task)
    spec = sources.gather(request.task, cfg, found)
    output = Path(request.output) if request.output is not None else None
    if output is not None and check_outputs:
        extra = outputs.run_extras(output, request.save_every, cfg.steps, request.plot)
        outputs.check_output(output, input_files(request, cfg, spec), request.overwrite, extra)
    loaded = sources.load(spec, cfg, request.max_input_pixels, cache)
    return Job(request.task, cfg, request, output, spec, loaded)


@dataclass
class Job:
    """A checked run: its config, its decoded inputs and where it writes."""
    task: str
    cfg: Config
    request: Request
    output: Optional[Path]
    spec: "sources.Spec"
    loaded: "sources.Loaded"

    def reads(self) -> list:
        """[(role, absolute path)]: every file this run reads, the weights file included."""
        extra = [("weights", str(Path(self.cfg.weights).resolve()))] if self.cfg.weights else []
        return self.spec.reads() + extra

    def run(self, on_event: Optional[Callable] = None, cancel=None):
        """Run, emitting events to ``on_event``; write the outputs. Returns the DoneEvent.

        ``cancel`` is anything with ``is_set()`` (a threading.Event): once set, the run stops
        before its next step and keeps the best image so far, as Ctrl-C does. Stopped before
        its first step, it writes nothing and raises ``Cancelled``."""
        from . import image as imageio, tasks
        check_callbacks(on_event, cancel)
        emit = on_event or (lambda e: None)
        loaded, request, output = self.loaded, self.request, self.output
        scales = []

        def on_plan(info):
            scales.append(len(info["schedule"]))
            peak = max(info["peak_bytes"], loaded.decode_bytes) + loaded.resident_bytes
            emit(PlanEvent(info["schedule"], info["output_hw"], info["precision"],
                           info["device"], peak, info.get("seconds"),
                           info.get("available_bytes"), self.reads(), info.get("tiles", []),
                           info.get("history", 0), info.get("budget_bytes"),
                           info.get("step_seconds", []), info.get("deep_style_scale"),
                           info.get("kept_from", []), info.get("reuse", []),
                           info.get("compact_tails", []), info.get("tail_maps", [])))

        def callback(s):
            emit(StepEvent(s.step, s.total_steps, s.loss, s.terms, s.elapsed, s.scale, s.side,
                           scales[0] if scales else 1, s.image))
            if request.save_every and output is not None and s.step % request.save_every == 0:
                imageio.save(s.image.clamp(0, 1).cpu(), outputs.snapshot_path(output, s.step))

        result = tasks.run(self.task, self.cfg, loaded.content, loaded.styles,
                           init_image=loaded.init, callback=callback, regions=loaded.regions,
                           on_plan=on_plan,
                           should_stop=None if cancel is None else cancel.is_set,
                           started=request.started_at)
        if result.outcome.stop_reason == "interrupted" and result.outcome.steps == 0:
            raise Cancelled("cancelled before the first step; nothing was written")
        record = record_path = None
        if output is not None:
            record, record_path = write_outputs(result, output, self.spec.record_inputs(),
                                                argv=request.argv, plot=request.plot)
        done = DoneEvent(result, output, record_path, record)
        emit(done)
        return done


def check_callbacks(on_event=None, cancel=None, name: str = "on_event") -> None:
    """``on_event`` is None or callable; ``cancel`` None or a flag with ``is_set()`` (such as
    a threading.Event)."""
    if on_event is not None and not callable(on_event):
        raise UserError(f"{name}: give a function (it is called with each event), got "
                        f"{type(on_event).__name__}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise UserError("cancel: give a threading.Event (anything with is_set()), got "
                        f"{type(cancel).__name__}")


def write_outputs(result, output: Path, inputs: dict, argv=None, plot=False, record_path=None):
    """The image (with its record in the PNG's text) and the record beside it, written as a
    pair: both go to temporary files first and are renamed into place only when both are
    complete, so a full disk leaves neither. With ``plot``, the loss curves too. Returns
    (record, record path)."""
    from . import image as imageio, record as records
    record_path = record_path or records.record_path(output)
    rec = records.build(result, output, inputs, argv=argv)
    write_image = imageio.encoder(result.tensor, output, records.png_metadata(rec)
                                  if output.suffix.lower() == ".png" else None)
    with imageio.atomic_path(record_path) as rec_tmp, imageio.atomic_path(output) as img_tmp:
        with open(img_tmp, "wb") as fh:
            write_image(fh)
        records.write(rec, rec_tmp)
    if plot:
        from . import figures
        figures.plot_history(result.history, loss_weights(rec["options"]),
                             outputs.plot_path(output), title=output.name)
    return rec, record_path


def loss_weights(options: dict) -> dict:
    """The weight of each loss term in the total, from a run's options."""
    return {t: options[f"{t}_weight"] for t in ("content", "style", "tv", "temporal")
            if options.get(f"{t}_weight") is not None}
