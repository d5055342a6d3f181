"""The file formats multi-label datasets come in, one module per family. Each registers its
dataset reader under the format name a card's ``format:`` uses:

    arff      MULAN ARFF + .xml label list                              (arff.py)
    xc-bow    XC repository BOW file: one file, or a train and a test file   (bow.py)
    xc-split  XC repository split files <prefix>_X_Xf.txt + <prefix>_X_Y.txt  (xc.py)
    lf        xc-split plus the label-feature raw texts, JSON lines       (lf.py)
    text      AttentionXML-style raw texts + label-name lines, no features (text.py)

``xc.py`` also holds the sparse matrix text format (prediction and label files), filter files
and split index files; ``common.py`` the line reading shared by all and the reader registry
``READERS`` (``READERS.get(name).read(folder, source)``). A new format is one module here that
registers its reader with ``@register_reader(name, files=...)``, imported below.
"""

from bench.data.formats.arff import ArffData, read_arff, read_mulan_xml, write_arff, write_mulan_xml
from bench.data.formats.bow import read_bow, write_bow
from bench.data.formats.common import READERS, Read, Reader, register_reader
from bench.data.formats.lf import LFRecords, read_lf_jsonl, read_raw_texts, write_lf_jsonl
from bench.data.formats.text import read_texts_and_label_names
from bench.data.formats.xc import (
    read_filter, read_sparse_matrix, read_split_indices, write_filter, write_sparse_matrix, write_split_indices,
)

__all__ = [
    "READERS", "Read", "Reader", "register_reader",
    "ArffData", "read_arff", "read_mulan_xml", "write_arff", "write_mulan_xml",
    "read_bow", "write_bow",
    "LFRecords", "read_lf_jsonl", "read_raw_texts", "write_lf_jsonl",
    "read_texts_and_label_names",
    "read_filter", "read_sparse_matrix", "read_split_indices", "write_filter", "write_sparse_matrix",
    "write_split_indices",
]
