"""Line charts drawn with Pillow alone, in the style of the figures of "Scaling (Down) CLIP" (Li,
Xie, Cubuk 2024): an error (%) on the y axis against samples seen or total compute on a log x axis,
one coloured line with markers per setting, error bars of one standard deviation over seeds,
ticks, axis labels, a title and a legend. scripts/reproduce.py draws its figures with these.

    chart = line_chart([Series("top 40%", [(1e3, 62.0, 1.5), (1e4, 41.0, 0.8)])],
                       title="zero-shot", x_label="samples seen", y_label="error (%)")
    figure([chart, chart], columns=2, legend=[...]).save("out.png")

No matplotlib: tinyclip's runtime dependencies are torch, numpy, pillow, ftfy, regex and tqdm.
"""
import math
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

# tab10, the colours most plotting libraries (and the paper's figures) cycle through
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
MARKERS = ("circle", "square", "triangle", "diamond")
BACKGROUND, INK, GRID = "white", (30, 30, 30), (228, 228, 228)


@dataclass
class Series:
    """One line: its legend label and (x, y, y_error) points; the colour is picked by position."""
    label: str
    points: list = field(default_factory=list)  # [(x, y, y_err or 0)]
    color: str = None
    marker: str = None


def font(size: int):
    """DejaVu Sans where the system has it, else Pillow's bundled font (scalable from Pillow 10.1)."""
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1: a fixed small bitmap font
        return ImageFont.load_default()


def text_size(draw, text, fnt):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
    return right - left, bottom - top


# --- ticks ----------------------------------------------------------------------------------------

def si(value: float) -> str:
    """1500 -> '1.5k', 2e6 -> '2M', 0.05 -> '0.05': short tick labels."""
    if value == 0:
        return "0"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def log_ticks(lo: float, hi: float, fallback=()) -> list:
    """1-2-5 ticks inside [lo, hi] (lo > 0); on a narrow range 1-9 ticks, or else the `fallback` values
    (the data's own x values) rounded to 2 significant digits."""
    def candidates(mantissas):
        found = []
        for exponent in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
            found += [m * 10.0 ** exponent for m in mantissas if lo * (1 - 1e-9) <= m * 10.0 ** exponent <= hi * (1 + 1e-9)]
        return found
    ticks = candidates((1, 2, 5))
    if len(ticks) > 7:  # a wide range: powers of ten only
        ticks = [t for t in ticks if round(t / 10 ** math.floor(math.log10(t))) == 1] or ticks
    if len(ticks) < 2:
        ticks = candidates(range(1, 10))
    if len(ticks) < 2:
        ticks = sorted({float(f"{x:.2g}") for x in fallback if lo <= float(f"{x:.2g}") <= hi})
    return ticks


def linear_ticks(lo: float, hi: float, count: int = 5) -> list:
    """Round-numbered ticks (steps of 1, 2 or 5 x 10^k) spanning [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


# --- drawing --------------------------------------------------------------------------------------

def _marker(draw, x, y, kind, color, r=4):
    if kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=color)
    elif kind == "triangle":
        draw.polygon([(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)], fill=color)
    elif kind == "diamond":
        draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=color)
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def _style(series, index):
    return (series.color or PALETTE[index % len(PALETTE)],
            series.marker or MARKERS[(index // len(PALETTE)) % len(MARKERS)])


def line_chart(series, *, title, x_label, y_label, log_x=True, size=(420, 310), legend=False) -> Image.Image:
    """One panel: every Series as a line with markers and +-y_err bars on shared axes.

    Points with x <= 0 (on a log axis) or a None y are left out; an empty chart still gets its
    axes and a 'no data' note, so a figure's grid never has holes."""
    width, height = size
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, normal = font(11), font(13)
    left, right, top, bottom = 58, 12, 28, 44
    plot = (left, top, width - right, height - bottom)
    draw.text((width // 2, 6), title, fill=INK, font=normal, anchor="ma")

    drawn = [(s, [(x, y, e or 0.0) for x, y, e in s.points if y is not None and (x > 0 or not log_x)])
             for s in series]
    xs = [x for _, pts in drawn for x, _, _ in pts]
    ys = [v for _, pts in drawn for _, y, e in pts for v in (y - e, y + e)]
    if not xs:
        draw.rectangle(plot, outline=INK)
        draw.text(((plot[0] + plot[2]) // 2, (plot[1] + plot[3]) // 2), "no data", fill=INK, font=small, anchor="mm")
        return _with_legend(image, series) if legend else image

    x_lo, x_hi = min(xs), max(xs)
    if log_x:
        pad = 10 ** (0.06 * max(math.log10(x_hi / x_lo), 0.5))  # widen a little so markers sit inside
        x_lo, x_hi = x_lo / pad, x_hi * pad
        to_unit = lambda x: (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))
        x_ticks = log_ticks(x_lo, x_hi, fallback=xs)
    else:
        pad = 0.06 * ((x_hi - x_lo) or 1.0)
        x_lo, x_hi = x_lo - pad, x_hi + pad
        to_unit = lambda x: (x - x_lo) / (x_hi - x_lo)
        x_ticks = [t for t in linear_ticks(x_lo, x_hi) if x_lo <= t <= x_hi]
    y_ticks = linear_ticks(min(ys), max(ys))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    px = lambda x: plot[0] + to_unit(x) * (plot[2] - plot[0])
    py = lambda y: plot[3] - (y - y_lo) / ((y_hi - y_lo) or 1.0) * (plot[3] - plot[1])

    for t in y_ticks:  # horizontal grid lines and y tick labels
        draw.line([(plot[0], py(t)), (plot[2], py(t))], fill=GRID)
        draw.line([(plot[0] - 4, py(t)), (plot[0], py(t))], fill=INK)
        draw.text((plot[0] - 6, py(t)), f"{t:g}", fill=INK, font=small, anchor="rm")
    for t in x_ticks:
        draw.line([(px(t), plot[1]), (px(t), plot[3])], fill=GRID)
        draw.line([(px(t), plot[3]), (px(t), plot[3] + 4)], fill=INK)
        draw.text((px(t), plot[3] + 6), si(t), fill=INK, font=small, anchor="ma")
    draw.rectangle(plot, outline=INK)
    draw.text(((plot[0] + plot[2]) // 2, height - 6), x_label + (" (log scale)" if log_x else ""), fill=INK,
              font=small, anchor="md")
    label_w, label_h = text_size(draw, y_label, small)
    rotated = Image.new("RGBA", (label_w + 4, label_h + 6), (255, 255, 255, 0))
    ImageDraw.Draw(rotated).text((2, 1), y_label, fill=INK, font=small)
    rotated = rotated.rotate(90, expand=True)
    image.paste(rotated, (4, (plot[1] + plot[3] - rotated.height) // 2), rotated)

    for index, (s, pts) in enumerate(drawn):
        color, marker = _style(s, index)
        pts = sorted(pts)
        if len(pts) > 1:
            draw.line([(px(x), py(y)) for x, y, _ in pts], fill=color, width=2)
        for x, y, e in pts:
            if e > 0:  # error bar with caps
                draw.line([(px(x), py(y - e)), (px(x), py(y + e))], fill=color, width=1)
                for cap in (y - e, y + e):
                    draw.line([(px(x) - 3, py(cap)), (px(x) + 3, py(cap))], fill=color, width=1)
            _marker(draw, px(x), py(y), marker, color)
    return _with_legend(image, series) if legend else image


def legend_strip(series, width: int) -> Image.Image:
    """Legend entries (marker, line, label) laid out left to right, wrapping to new rows."""
    fnt = font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries = [(_style(s, i), s.label, text_size(probe, s.label, fnt)[0] + 40) for i, s in enumerate(series)]
    rows, row, used = [], [], 10
    for entry in entries:
        if row and used + entry[2] > width - 10:
            rows.append(row)
            row, used = [], 10
        row.append(entry)
        used += entry[2]
    if row:
        rows.append(row)
    image = Image.new("RGB", (width, 8 + 20 * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        x, y = 10, 14 + 20 * r
        for (color, marker), label, entry_width in row:
            draw.line([(x, y), (x + 24, y)], fill=color, width=2)
            _marker(draw, x + 12, y, marker, color)
            draw.text((x + 30, y), label, fill=INK, font=fnt, anchor="lm")
            x += entry_width
    return image


def _with_legend(image, series):
    strip = legend_strip(series, image.width)
    out = Image.new("RGB", (image.width, image.height + strip.height), BACKGROUND)
    out.paste(image, (0, 0))
    out.paste(strip, (0, image.height))
    return out


def figure(panels, *, columns: int, title: str = None, legend=None) -> Image.Image:
    """Panels (same size) on a grid, with an optional title above and a shared legend below."""
    if not panels:
        raise ValueError("figure needs at least one panel")
    w, h = panels[0].size
    rows = math.ceil(len(panels) / columns)
    head = 30 if title else 0
    strip = legend_strip(legend, w * columns) if legend else None
    out = Image.new("RGB", (w * columns, head + h * rows + (strip.height if strip else 0)), BACKGROUND)
    if title:
        ImageDraw.Draw(out).text((out.width // 2, 8), title, fill=INK, font=font(15), anchor="ma")
    for i, panel in enumerate(panels):
        out.paste(panel, ((i % columns) * w, head + (i // columns) * h))
    if strip:
        out.paste(strip, (0, head + h * rows))
    return out


def save(image: Image.Image, path) -> None:
    """PNG with an adaptive 128-colour palette: line art loses nothing visible and the file halves."""
    image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
