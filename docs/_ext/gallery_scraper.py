"""An image scraper for sphinx-gallery: shows the PNG files an example wrote.

``momcore.plots`` draws on matplotlib's Agg canvas without pyplot and writes PNG files,
returning their paths. After each code block this scraper looks for ``pathlib.Path``
values in the example's globals that name PNG files not shown yet, copies them to the
gallery's image names and returns the reST that shows them.
"""
from __future__ import annotations

import pathlib
import shutil
from typing import Any

from sphinx_gallery.scrapers import figure_rst


def png_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    shown = block_vars.setdefault("momcore_shown_pngs", set())
    found = []
    for value in list(vars(block_vars["fake_main"]).values()):
        if (isinstance(value, pathlib.Path) and value.suffix == ".png" and value.is_file()
                and value.resolve() not in shown):
            shown.add(value.resolve())
            found.append(value)
    images = []
    for source, target in zip(found, block_vars["image_path_iterator"]):
        shutil.copyfile(source, target)
        images.append(target)
    return figure_rst(images, gallery_conf["src_dir"])
