#!/usr/bin/env bash
# Screenshots of the result browsers as a real browser draws them from an executed notebook's HTML:
#   nbs/images/make_screenshots.sh [NOTEBOOK ...]      (default: nbs/25_explore.ipynb; run from anywhere)
# For each notebook: execute it in a Jupyter kernel (nbconvert; the widget state is saved), keep the cells
# whose outputs are widgets, export them to HTML with the widget manager, and let headless Chromium draw it.
# One picture per kind of browser, the kind being the first word of its title ('retrieval: top 5, ...' ->
# retrieval): nbs/images/<name>_<kind>.png (the widget) and <name>_<kind>_static.png (the static-HTML view the
# docs and GitHub show), <name> from the notebook: 25_explore -> explore (explore_retrieval.png, explore_rag.png,
# explore_judge.png and their _static twins). (A page with MathJax's CDN link: it fails
# offline, harmlessly; everything the widgets need is local.) Needs the [dev] extra (jupyter, ipywidgets),
# chromium (Debian: apt-get install -y chromium) and npm: the widget manager (@jupyter-widgets/html-manager)
# and require.js come from the npm registry into $FTK_JS_CACHE, because nbconvert's CDN links may be unreachable.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
cache=${FTK_JS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finetune_kit/js}
declare -A names=([25_explore]=explore)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"
if [ ! -f "$cache/html-manager/dist/embed-amd.js" ] || [ ! -f "$cache/requirejs/require.js" ]; then
  (cd "$cache" && npm pack --silent @jupyter-widgets/html-manager@1 requirejs@2 >/dev/null \
     && mkdir -p html-manager requirejs \
     && tar xzf jupyter-widgets-html-manager-*.tgz -C html-manager --strip-components 1 \
     && tar xzf requirejs-*.tgz -C requirejs --strip-components 1 && rm -f ./*.tgz)
fi

shot() {  # shot HTML PNG WIDTH: draw HTML in headless Chromium, then crop the white margins
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$(mktemp -d -p "$work")" \
    --virtual-time-budget=20000 --window-size="$3,2400" --screenshot="$2" "file://$1" 2>/dev/null
  python - "$2" <<'PY'
import sys
from PIL import Image, ImageChops
p = sys.argv[1]; im = Image.open(p).convert('RGB')
box = ImageChops.difference(im, Image.new('RGB', im.size, 'white')).getbbox()
if box is None: sys.exit(f'{p}: the page is blank')
l, t, r, b = box; im = im.crop((max(l - 16, 0), max(t - 16, 0), min(r + 16, im.width), min(b + 16, im.height)))
im.quantize(256, method=Image.Quantize.MEDIANCUT).save(p, optimize=True)   # a page of flat colours: 256 of them lose nothing visible
print(p, Image.open(p).size)
PY
}

for nb in "${@:-$root/nbs/25_explore.ipynb}"; do
  nb=$(cd "$(dirname "$nb")" && pwd)/$(basename "$nb"); stem=$(basename "$nb" .ipynb); name=${names[$stem]:-${stem#*_}}
  jupyter nbconvert --to notebook --execute "$nb" --output "$work/$stem.ipynb" --ExecutePreprocessor.timeout=1800 --log-level=WARN
  kinds=$(python - "$work/$stem.ipynb" <<'PY'
# keep the cells that show a browser (a widget whose HTML fallback is a browser's), grouped by the first word of the
# browser's title: one notebook per kind; a twin without the widget view shows the static HTML
import json, sys, copy, re
p = sys.argv[1]; nb = json.load(open(p))
wv = 'application/vnd.jupyter.widget-view+json'
browser = lambda o: wv in o.get('data', {}) and 'class="ftk-b"' in ''.join(o['data'].get('text/html', ''))
kind = lambda o: re.search(r'class="ftk-b"><div class="ftk-meta">([A-Za-z0-9]+)', ''.join(o['data']['text/html'])).group(1).lower()
if 'widgets' not in nb['metadata']: sys.exit(f'{p}: no widget state saved')
groups = {}
for c in nb['cells']:
    for o in c.get('outputs', []):
        if browser(o): groups.setdefault(kind(o), []).append(dict(c, outputs=[o]))
if not groups: sys.exit(f'{p}: no cell shows a widget')
for k, cells in groups.items():
    w = dict(nb, cells=cells); json.dump(w, open(p.replace('.ipynb', f'-{k}-widget.ipynb'), 'w'))
    st = copy.deepcopy(w); st['metadata'].pop('widgets')
    for c in st['cells']:
        for o in c['outputs']: o.get('data', {}).pop(wv, None)
    json.dump(st, open(p.replace('.ipynb', f'-{k}-static.ipynb'), 'w'))
    print(k)
PY
)
  for kind in $kinds; do
    for view in widget static; do
      jupyter nbconvert --to html --no-input --no-prompt --log-level=WARN "$work/$stem-$kind-$view.ipynb" --output "$work/$stem-$kind-$view.html" \
        --HTMLExporter.widget_renderer_url="file://$cache/html-manager/dist/embed-amd.js" \
        --HTMLExporter.require_js_url="file://$cache/requirejs/require.js"
    done
    shot "$work/$stem-$kind-widget.html" "$here/${name}_$kind.png" 1100
    shot "$work/$stem-$kind-static.html" "$here/${name}_${kind}_static.png" 1100
  done
done
