"""The fused CNN-HAN genre model of Nandy and Agrawal (2021).

* :class:`SpectrogramCNN`: blocks of conv (1 x k kernel, along time) -> ReLU ->
  batch norm -> max pool -> dropout, then a dense layer to a 500-d audio vector.
* :class:`HAN`: word embedding -> word BiGRU -> attention (equations 2-4) gives one
  vector per line; line BiGRU -> the same attention gives the lyrics vector.
* :class:`MusicnnBranch`: instead of the CNN, the MSD-pretrained musicnn
  (``ModelConfig.audio_branch = "musicnn"``), frozen or fine-tuned.
* :class:`GenreModel`: concatenates both vectors and classifies them with one
  linear layer (equation 5; softmax is applied by the caller / the loss). Its
  ``forward`` over a :class:`FusedBatch` is the one pass that training, evaluation
  and inference call.

Beyond the paper: most tracks have no lyrics (and a lyrics-only query has no audio),
so a learned "no lyrics" vector stands in for the HAN output when lyrics are absent,
and a learned "no audio" vector for the CNN output when audio is absent. One model
then serves tracks with lyrics, without lyrics, and lyrics alone.

The log-mel front end lives inside the model (``GenreModel.frontend``), so training
from precomputed spectrograms and inference from waveforms use the same features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .audio import LogMel
from .config import AudioConfig, ModelConfig
from .text import PAD_ID, UNK_ID

if TYPE_CHECKING:
    from .head import Block


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim that gives padding exactly zero weight.

    Rows with no valid position return all zeros instead of NaN.

    Parameters
    ----------
    scores : [shape=(..., n)] float
    mask : [shape=(..., n)] bool, True where valid
    """
    scores = scores.float().masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)
    return weights * mask


class Attention(nn.Module):
    """Additive attention of the HAN paper (equations 2-4).

    ``u = tanh(W h + b)``; ``a = softmax(u . u_a)``; ``v = sum_t a_t h_t``.
    """

    def __init__(self, in_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, attention_dim)
        self.context = nn.Parameter(torch.empty(attention_dim).uniform_(-0.1, 0.1))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [shape=(n, steps, in_dim)], mask [shape=(n, steps)] -> (vector [n, in_dim], weights [n, steps])."""
        u = torch.tanh(self.proj(h))  # (n, steps, attention_dim)
        weights = masked_softmax(u @ self.context.to(u.dtype), mask)  # (n, steps)
        vector = torch.bmm(weights.unsqueeze(1).to(h.dtype), h).squeeze(1)  # (n, in_dim)
        return vector, weights


def _run_bigru(gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a BiGRU on padded sequences so padding never enters the recurrence.

    x [shape=(n, steps, dim)], lengths [shape=(n,)] >= 1 -> [shape=(n, steps, 2 * hidden)].
    """
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = gru(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


class ConvBlock(nn.Module):
    """conv (1 x k along time) -> ReLU -> batch norm -> max pool -> dropout."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int, pool: tuple[int, int], dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=(1, kernel), padding=(0, kernel // 2))
        self.bn = nn.BatchNorm2d(out_ch)
        self.pool = nn.MaxPool2d(pool, ceil_mode=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU: the conv output is not needed for backward; saves a full-resolution copy.
        return self.dropout(self.pool(self.bn(torch.relu_(self.conv(x)))))


class SpectrogramCNN(nn.Module):
    """Log-mel spectrogram -> audio vector.

    Input [shape=(batch, n_mels, frames)] -> output [shape=(batch, audio_dim)].
    Any number of frames works (the time axis is pooled globally at the end), so
    short tracks and training crops need no special model.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        # Batch norm on the raw dB values standardises the input scale.
        self.input_bn = nn.BatchNorm2d(1)
        blocks = []
        in_ch, freq = 1, config.n_mels
        for out_ch in config.cnn_channels:
            blocks.append(ConvBlock(in_ch, out_ch, kernel=config.cnn_kernel,
                                    pool=tuple(config.cnn_pool), dropout=config.dropout))
            in_ch, freq = out_ch, -(-freq // config.cnn_pool[0])
        self.blocks = nn.Sequential(*blocks)
        # Mean and max over time of every (channel, band): 2 * channels * bands.
        self.dense = nn.Linear(2 * in_ch * freq, config.audio_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.input_bn(mel.unsqueeze(1))  # (batch, 1, n_mels, frames)
        # channels_last lets oneDNN/cuDNN use their fast kernels for the 1 x k convolutions
        # (about 2x on CPU for the full-resolution first block).
        x = self.blocks(x.contiguous(memory_format=torch.channels_last))  # (batch, channels, bands, steps)
        x = x.flatten(1, 2)  # (batch, channels * bands, steps)
        pooled = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)  # (batch, 2 * channels * bands)
        return self.dropout(torch.relu(self.dense(pooled)))  # (batch, audio_dim)


class MusicnnBranch(nn.Module):
    """The pretrained musicnn as the audio branch: log-mel -> musicnn features.

    Input [shape=(batch, 96, frames)] (``LogMel`` with ``scale="musicnn"``) -> output
    [shape=(batch, config.audio_vector_dim)]: each spectrogram is cut into 3-s patches
    (musicnn's input), the chosen feature is taken per patch and averaged over them.
    The backbone's batch norms keep musicnn's statistics (they are never put in train
    mode, also when fine-tuning: a few hundred clips would only make them worse); when
    ``musicnn_finetune`` is off its weights are frozen and run without autograd.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from .musicnn import Musicnn

        self.backbone = Musicnn()
        self.feature = config.musicnn_features
        self.finetune = config.musicnn_finetune
        # Its batch norms keep musicnn's statistics (GenreModel.trainable_batchnorms leaves them out).
        self.backbone.requires_grad_(self.finetune)
        self.backbone.eval()

    def load_pretrained(self, path=None) -> None:
        """Copy the MSD-trained weights (default: the shipped ones) into the backbone."""
        from .musicnn import load_pretrained

        self.backbone.load_state_dict(load_pretrained(path).state_dict())

    def train(self, mode: bool = True) -> "MusicnnBranch":
        super().train(mode)
        # Batch norms keep the pretrained statistics; dropout only when fine-tuning.
        self.backbone.eval()
        if mode and self.finetune:
            self.backbone.dropout.train()
        return self

    #: Patches per backbone call on the CPU without autograd. The timbral convolutions'
    #: activations (the live filters x 187 x 59 per patch) outgrow the caches in larger
    #: calls: measured 7.6 ms per patch in calls of 2 patches, 5.4 at 8, 8.2 at 32 (2-core
    #: x86-64, torch 2.13, two threads).
    cpu_chunk = 8

    def _features(self, patches: torch.Tensor) -> torch.Tensor:
        out = self.backbone(patches)
        return self.backbone.pool_bn(out["pool"]) if self.feature == "pool" else out[self.feature]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        from .musicnn import split_patches

        patches, n = split_patches(mel)  # (batch * n, 187, 96)
        grad = self.finetune and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            if patches.device.type == "cpu" and not grad and patches.shape[0] > self.cpu_chunk:
                feats = torch.cat([self._features(c) for c in patches.split(self.cpu_chunk)])
            else:
                feats = self._features(patches)
        return feats.float().view(mel.shape[0], n, -1).mean(dim=1)  # (batch, audio_vector_dim)


@dataclass
class HANOutput:
    vector: torch.Tensor  # (batch, 2 * line_hidden); zeros for documents without lyrics
    word_attention: torch.Tensor  # (batch, max_lines, max_words)
    line_attention: torch.Tensor  # (batch, max_lines)


class HAN(nn.Module):
    """Hierarchical attention network over lyrics.

    ids/mask [shape=(batch, max_lines, max_words)] -> lyrics vector [shape=(batch, 2 * line_hidden)].
    Only lines holding at least one word go through the word BiGRU (padding lines cost nothing).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        self.word_gru = nn.GRU(config.embed_dim, config.word_hidden, batch_first=True, bidirectional=True)
        self.word_attention = Attention(2 * config.word_hidden, config.attention_dim)
        self.line_gru = nn.GRU(2 * config.word_hidden, config.line_hidden, batch_first=True, bidirectional=True)
        self.line_attention = Attention(2 * config.line_hidden, config.attention_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.out_dim = 2 * config.line_hidden

    def load_embeddings(self, vectors: torch.Tensor, *, freeze: bool = False) -> None:
        """Initialise the embedding from word2vec/GloVe rows [shape=(vocab_size, embed_dim)]."""
        if vectors.shape != self.embedding.weight.shape:
            raise ValueError(f"embedding shape {tuple(vectors.shape)} != {tuple(self.embedding.weight.shape)}")
        with torch.no_grad():
            self.embedding.weight.copy_(vectors)
            self.embedding.weight[0].zero_()  # padding stays zero
        self.embedding.weight.requires_grad_(not freeze)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> HANOutput:
        batch, max_lines, max_words = ids.shape
        word_counts = mask.sum(dim=-1)  # (batch, max_lines)
        line_mask = word_counts > 0  # (batch, max_lines)
        line_counts = line_mask.sum(dim=-1)  # (batch,)
        word_att = ids.new_zeros((batch, max_lines, max_words), dtype=torch.float32)
        line_att = ids.new_zeros((batch, max_lines), dtype=torch.float32)

        # Word level, on the non-empty lines only.
        flat_ids = ids[line_mask]  # (n_lines, max_words)
        flat_mask = mask[line_mask]  # (n_lines, max_words)
        vector = self.embedding.weight.new_zeros((batch, self.out_dim))
        if flat_ids.shape[0] == 0:
            return HANOutput(vector, word_att, line_att)
        emb = self.dropout(self.embedding(flat_ids))  # (n_lines, max_words, embed_dim)
        h_words = _run_bigru(self.word_gru, emb, word_counts[line_mask])  # (n_lines, max_words, 2*word_hidden)
        line_vecs, w_att = self.word_attention(h_words, flat_mask)  # (n_lines, 2*word_hidden), (n_lines, max_words)
        word_att[line_mask] = w_att.float()

        # Line level, on documents that have at least one line.
        has_doc = line_counts > 0  # (batch,)
        lines = line_vecs.new_zeros((batch, max_lines, line_vecs.shape[-1]))
        lines[line_mask] = line_vecs
        lines, doc_line_mask = lines[has_doc], line_mask[has_doc]  # (n_docs, max_lines, 2*word_hidden)
        h_lines = _run_bigru(self.line_gru, self.dropout(lines), line_counts[has_doc])
        doc_vecs, l_att = self.line_attention(h_lines, doc_line_mask)  # (n_docs, 2*line_hidden)
        vector = vector.to(doc_vecs.dtype)
        vector[has_doc] = doc_vecs
        line_att[has_doc] = l_att.float()
        return HANOutput(vector, word_att, line_att)


class BagOfWords(nn.Module):
    """Lyrics -> TF-IDF vector: ids/mask [shape=(batch, lines, words)] ->
    [shape=(batch, vocab_size + bigrams + char_ngrams)].

    ``log(1 + count) * idf`` per vocabulary word and per known word pair (two words side
    by side in a line, :attr:`bigram_keys`), L2-normalised: sklearn's 1-2-gram TF-IDF
    over the model's words and pairs, but with ``log(1 + count)`` for its ``1 + log(count)``;
    padding and unknown words count for nothing. With character n-gram columns (sklearn's
    ``char_wb`` 2- to 5-grams of the vocabulary words: a word's n-grams count each time
    the word does) the words and pairs and the n-grams are L2-normalised apart and each
    scaled by ``1/sqrt(2)``, as two TF-IDF vectorisers side by side. ``idf``,
    ``bigram_keys`` and the n-gram map are persistent buffers, set from the training lyrics
    by :meth:`set_bigrams`, :meth:`set_char_ngrams` and :meth:`set_idf`.

    A bag with text columns (``text_words``, ``text_chars``) reads the cleaned text itself
    instead (:meth:`read_texts`; :mod:`mmgenre_core.ngrams`): word 1-2-grams and character
    2-5-grams, no vocabulary columns; its n-gram keys are set by :meth:`set_text_keys`.
    With ``text_shape`` columns after them (:mod:`mmgenre_core.text_shape`: length, line
    repetition, script), each text's shape numbers, standardised by :meth:`set_text_shape`.
    """

    def __init__(self, vocab_size: int, bigrams: int = 0, *, char_ngrams: int = 0, char_entries: int = 0,
                 text_words: int = 0, text_chars: int = 0, text_shape: int = 0) -> None:
        super().__init__()
        from .text_shape import SHAPE_NAMES

        self.vocab_size = vocab_size
        self.char_ngrams = char_ngrams
        self.text_words, self.text_chars, self.text_shape = text_words, text_chars, text_shape
        if self.reads_text and (bigrams or char_ngrams):
            raise ValueError("a bag that reads the text has no vocabulary columns")
        if text_shape not in (0, len(SHAPE_NAMES)) or (text_shape and not self.reads_text):
            raise ValueError(f"a bag that reads the text has 0 or {len(SHAPE_NAMES)} shape columns; "
                             "an id bag has none")
        width = text_words + text_chars if self.reads_text else vocab_size + bigrams + char_ngrams
        self.register_buffer("idf", torch.ones(width))
        # The text columns' n-gram keys (mmgenre_core/ngrams.py), ascending: words, then
        # characters. Stored only by a bag that reads the text.
        self.register_buffer("text_keys", torch.zeros(text_words + text_chars, dtype=torch.long),
                             persistent=self.reads_text)
        # The shape columns are (shape - shape_center) * shape_scale (stored only when there are any).
        self.register_buffer("shape_center", torch.zeros(text_shape), persistent=text_shape > 0)
        self.register_buffer("shape_scale", torch.ones(text_shape), persistent=text_shape > 0)
        # first id * vocab_size + second id of each pair column, ascending (stored only when
        # there are pair columns: checkpoints of unigram bags load as before).
        self.register_buffer("bigram_keys", torch.arange(bigrams, dtype=torch.long), persistent=bigrams > 0)
        # The n-gram map as (word id, n-gram column, times) entries, stored only when there
        # are n-gram columns; 20,000 words x 70,000 n-grams dense would be 5.6 GB.
        has_chars = char_ngrams > 0
        # (int32 ids: half the checkpoint bytes of int64.)
        self.register_buffer("char_word", torch.zeros(char_entries, dtype=torch.int32), persistent=has_chars)
        self.register_buffer("char_column", torch.zeros(char_entries, dtype=torch.int32), persistent=has_chars)
        self.register_buffer("char_times", torch.zeros(char_entries), persistent=has_chars)

    @staticmethod
    def pair_keys(ids: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys of the word pairs of ids/mask [shape=(batch, lines, words)] and where they are
        real (both words known) [shape=(batch, lines, words - 1)] each."""
        first, second = ids[..., :-1], ids[..., 1:]
        real = mask[..., :-1] & mask[..., 1:] & (first > UNK_ID) & (second > UNK_ID)
        return first * vocab_size + second, real

    @torch.no_grad()
    def set_bigrams(self, keys: torch.Tensor) -> None:
        """The pair columns' keys [shape=(bigrams,)] (ascending, distinct)."""
        keys = keys.to(self.bigram_keys)
        if keys.shape != self.bigram_keys.shape or (keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all())):
            raise ValueError("bigram keys must be distinct, ascending and fill the model's pair columns")
        self.bigram_keys.copy_(keys)

    @torch.no_grad()
    def set_char_ngrams(self, word: torch.Tensor, column: torch.Tensor, times: torch.Tensor) -> None:
        """The n-gram map: entry i says word id ``word[i]`` holds n-gram column ``column[i]``
        ``times[i]`` times; each [shape=(char_entries,)]."""
        if not (word.shape == column.shape == times.shape == self.char_word.shape):
            raise ValueError(f"the n-gram map needs {self.char_word.shape[0]} entries in each of its three tensors")
        if word.numel() and (int(word.min()) <= UNK_ID or int(word.max()) >= self.vocab_size
                             or int(column.min()) < 0 or int(column.max()) >= self.char_ngrams
                             or not bool((times > 0).all())):
            raise ValueError("n-gram map entries must name a vocabulary word, an n-gram column and a positive count")
        self.char_word.copy_(word.to(self.char_word.dtype))
        self.char_column.copy_(column.to(self.char_column.dtype))
        self.char_times.copy_(times.to(self.char_times))

    @torch.no_grad()
    def set_text_shape(self, center: torch.Tensor, scale: torch.Tensor) -> None:
        """The shape columns' centre and scale [shape=(text_shape,)] each: a column is
        ``(shape - center) * scale``."""
        if center.shape != self.shape_center.shape or scale.shape != self.shape_scale.shape:
            raise ValueError(f"the text shape needs {self.text_shape} centres and scales")
        if not (bool(torch.isfinite(center).all()) and bool(torch.isfinite(scale).all())):
            raise ValueError("text shape centres and scales must be finite")
        self.shape_center.copy_(center)
        self.shape_scale.copy_(scale)

    @property
    def width(self) -> int:
        """How many columns a bag row has: the n-gram (or word) columns and the shape columns."""
        return self.idf.shape[0] + self.text_shape

    @torch.no_grad()
    def set_idf(self, document_frequency: torch.Tensor, n_documents: int) -> None:
        """Smoothed idf (sklearn's): ``1 + log((1 + n) / (1 + df))``; df [shape=(bag columns,)]."""
        self.idf.copy_(1.0 + torch.log((1.0 + n_documents) / (1.0 + document_frequency.float())))

    def counts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Raw counts of each word, pair and n-gram column [shape=(batch, bag columns)]."""
        counts = self.idf.new_zeros((ids.shape[0], self.idf.shape[0]))
        counts.scatter_add_(1, ids.flatten(1), mask.flatten(1).to(counts.dtype))
        counts[:, :2] = 0  # PAD_ID and UNK_ID
        n_pairs = self.bigram_keys.shape[0]
        if n_pairs and ids.shape[-1] > 1:
            keys, real = self.pair_keys(ids, mask, self.vocab_size)
            keys, real = keys.flatten(1), real.flatten(1)
            at = torch.searchsorted(self.bigram_keys, keys).clamp(max=n_pairs - 1)
            hit = real & (self.bigram_keys[at] == keys)
            counts.scatter_add_(1, self.vocab_size + at, hit.to(counts.dtype))
        if self.char_ngrams:
            # n-gram counts = word counts @ map: (ngrams x vocab) sparse times (vocab x batch).
            words = counts[:, :self.vocab_size]
            counts[:, self.idf.shape[0] - self.char_ngrams:] = torch.sparse.mm(self._char_matrix(),
                                                                               words.T.contiguous()).T
        return counts

    def _char_matrix(self) -> torch.Tensor:
        """The n-gram map as a sparse CSR matrix [shape=(char_ngrams, vocab_size)], built once
        per device and map: building it takes 20 ms, ten times the product itself."""
        buffers = (self.char_word, self.char_column, self.char_times)
        key = tuple((b.data_ptr(), b._version, str(b.device)) for b in buffers)
        cached = getattr(self, "_char_cache", None)
        if cached is None or cached[0] != key:
            with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                matrix = torch.sparse_coo_tensor(torch.stack([self.char_column, self.char_word]).long(),
                                                 self.char_times, (self.char_ngrams, self.vocab_size),
                                                 check_invariants=False).coalesce().to_sparse_csr()
            cached = self._char_cache = (key, matrix)
        return cached[1]

    @property
    def reads_text(self) -> bool:
        """Whether the columns are n-grams of the text (:meth:`text_rows`), not of the ids."""
        return self.text_words + self.text_chars > 0

    @torch.no_grad()
    def set_text_keys(self, keys: torch.Tensor) -> None:
        """The text columns' n-gram keys [shape=(text_words + text_chars,)]: distinct,
        ascending, the first ``text_words`` of them word keys and the rest character keys."""
        from .ngrams import BLOCK_SPAN, CHAR_BLOCK, WORD_BLOCK

        keys = keys.to(self.text_keys)
        ok = keys.shape == self.text_keys.shape and (keys.numel() < 2 or bool((keys[1:] > keys[:-1]).all()))
        blocks = torch.div(keys, BLOCK_SPAN, rounding_mode="floor")
        ok = ok and bool((blocks[:self.text_words] == WORD_BLOCK).all()) and bool(
            (blocks[self.text_words:] == CHAR_BLOCK).all())
        if not ok:
            raise ValueError(f"text keys must be {self.text_keys.numel()} distinct ascending n-gram keys: "
                             f"{self.text_words} of words, then {self.text_chars} of characters")
        self.text_keys.copy_(keys)

    def text_counts(self, grams: Sequence[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
        """Raw counts of each text column, sparse COO [shape=(documents, columns)], from each
        document's :func:`mmgenre_core.ngrams.ngram_counts` (keys, counts); n-grams the bag
        does not know count for nothing."""
        keys = self.text_keys.cpu().numpy()
        rows, cols, vals = [], [], []
        for doc, (k, c) in enumerate(grams):
            if not len(keys) or not len(k):
                continue
            at = np.searchsorted(keys, k).clip(max=len(keys) - 1)
            hit = keys[at] == k
            rows.append(np.full(int(hit.sum()), doc, dtype=np.int64))
            cols.append(at[hit])
            vals.append(c[hit])
        if rows:
            index = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
            values = torch.from_numpy(np.concatenate(vals).astype(np.float32))
        else:
            index, values = torch.zeros((2, 0), dtype=torch.long), torch.zeros(0)
        return torch.sparse_coo_tensor(index, values, (len(grams), self.idf.shape[0]), is_coalesced=True,
                                       check_invariants=False)

    def text_rows(self, grams: Sequence[tuple[np.ndarray, np.ndarray]],
                  shapes: np.ndarray | None = None) -> torch.Tensor:
        """The bag of each document from its (keys, counts), sparse COO [shape=(documents,
        :attr:`width`)] on the CPU: ``(1 + log count) * idf`` (sklearn's sublinear tf), the word and
        the character columns each L2-normalised and scaled by ``1/sqrt(2)``: two sklearn
        ``TfidfVectorizer(sublinear_tf=True)`` side by side. A bag with shape columns needs
        each document's :func:`mmgenre_core.text_shape.text_shape` in ``shapes``
        [shape=(documents, text_shape)]; a document without n-grams gets none of them."""
        counts = self.text_counts(grams)
        index, values = counts.indices(), counts.values()
        idf = self.idf.detach().float().cpu()
        values = (1.0 + torch.log(values.clamp(min=1.0))) * idf[index[1]]
        block = (index[1] >= self.text_words).long()  # 0 words, 1 characters
        norms = torch.zeros((counts.shape[0], 2)).index_put_((index[0], block), values * values, accumulate=True)
        values = values / norms.sqrt().clamp(min=1e-12)[index[0], block] * 0.5 ** 0.5
        if self.text_shape:
            if shapes is None or tuple(shapes.shape) != (len(grams), self.text_shape):
                raise ValueError(f"this bag needs the {self.text_shape} shape numbers of each document")
            # Documents with n-grams the bag knows: a text without them reads as no lyrics.
            docs = torch.unique(index[0]) if index.shape[1] else torch.zeros(0, dtype=torch.long)
            shape = (torch.from_numpy(np.asarray(shapes, dtype=np.float32))[docs]
                     - self.shape_center.detach().float().cpu()) * self.shape_scale.detach().float().cpu()
            cols = torch.arange(self.idf.shape[0], self.width)
            index = torch.cat([index, torch.stack([docs.repeat_interleave(self.text_shape),
                                                   cols.repeat(len(docs))])], dim=1)
            values = torch.cat([values, shape.flatten()])
            return torch.sparse_coo_tensor(index, values, (len(grams), self.width),
                                           check_invariants=False).coalesce()
        return torch.sparse_coo_tensor(index, values, counts.shape, is_coalesced=True, check_invariants=False)

    def text_bags(self, texts: Sequence[str | None]) -> torch.Tensor:
        """The bag of each text (None or no words: all zeros), sparse COO [shape=(len(texts),
        :attr:`width`)] on the CPU."""
        from .ngrams import ngram_counts
        from .text_shape import text_shape as shape_of

        shapes = (np.array([shape_of(t) for t in texts], dtype=np.float32).reshape(len(texts), self.text_shape)
                  if self.text_shape else None)
        return self.text_rows([ngram_counts(t) for t in texts], shapes)

    def read_texts(self, texts: Sequence[str | None]) -> torch.Tensor:
        """The bag of each text (None or no words: all zeros), dense [shape=(len(texts), columns)]
        on the bag's device."""
        return self.text_bags(texts).to_dense().to(self.idf.device)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.reads_text:
            raise ValueError("this bag reads the lyrics text (read_texts), not the ids")
        tfidf = torch.log1p(self.counts(ids, mask)) * self.idf
        if not self.char_ngrams:
            return nn.functional.normalize(tfidf, dim=1)
        words, chars = tfidf.split([tfidf.shape[1] - self.char_ngrams, self.char_ngrams], dim=1)
        half = 0.5 ** 0.5
        return torch.cat([nn.functional.normalize(words, dim=1) * half, nn.functional.normalize(chars, dim=1) * half],
                         dim=1)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (batch, n_genres)
    word_attention: torch.Tensor | None = None  # (batch, max_lines, max_words)
    line_attention: torch.Tensor | None = None  # (batch, max_lines)


class GenreModel(nn.Module):
    """CNN (audio) + HAN (lyrics), concatenated, one linear layer to the genres (equation 5)."""

    def __init__(self, config: ModelConfig, audio_config: AudioConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.audio_config = audio_config or AudioConfig(n_mels=config.n_mels)
        if self.audio_config.n_mels != config.n_mels:
            raise ValueError("AudioConfig.n_mels and ModelConfig.n_mels differ")
        if (config.audio_branch == "musicnn") != (self.audio_config.scale == "musicnn"):
            raise ValueError("the musicnn audio branch needs AudioConfig scale='musicnn' (and only it)")
        fused = 0
        if config.use_audio:
            self.frontend = LogMel(self.audio_config)
            self.cnn = MusicnnBranch(config) if config.audio_branch == "musicnn" else SpectrogramCNN(config)
            self.no_audio = nn.Parameter(torch.zeros(config.audio_vector_dim))
            fused += config.audio_vector_dim
        if config.use_lyrics:
            self.han = HAN(config)
            self.no_lyrics = nn.Parameter(torch.zeros(2 * config.line_hidden))
            self.bow = BagOfWords(config.vocab_size, config.bag_bigrams, char_ngrams=config.bag_char_ngrams,
                                  char_entries=config.bag_char_entries, text_words=config.bag_text_words,
                                  text_chars=config.bag_text_chars,
                                  text_shape=config.bag_text_shape) if config.lyrics_bow else None
            fused += config.lyrics_dim
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(fused, config.n_genres)
        #: The learnt fusion rule for a row with both audio and lyrics (training/fusion.py;
        #: inference sets them from the checkpoint's metadata["fusion"]): a factor on its
        #: lyrics vector, and logits [shape=(n_genres,)] added (None: nothing).
        self.lyrics_scale_with_audio = 1.0
        self.lyrics_offset_with_audio: torch.Tensor | None = None

    # The three stages are public so inference can encode lyrics once per track and
    # audio once per window, then fuse per window.
    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [shape=(batch, n_mels, frames)] -> [shape=(batch, audio_vector_dim)]."""
        return self.cnn(mel)

    def absent_audio(self, batch: int) -> torch.Tensor:
        """The learned "no audio" vector, [shape=(batch, audio_vector_dim)]."""
        return self.no_audio.unsqueeze(0).expand(batch, -1)

    def _han_and_bag(self, ids: torch.Tensor, mask: torch.Tensor, has_lyrics: torch.Tensor,
                     texts: Sequence[str | None] | None) -> tuple[HANOutput, torch.Tensor | None]:
        """The HAN's output (the "no lyrics" vector for documents without words) and each
        document's bag (all zeros without lyrics; None: no bag): sparse COO rows on the CPU for a
        bag that reads the text, dense [shape=(batch, bag columns)] for the id bag."""
        out = self.han(ids, mask)
        present = has_lyrics & mask.flatten(1).any(dim=1)
        out.vector = torch.where(present.unsqueeze(-1), out.vector, self.no_lyrics.to(out.vector.dtype))
        if self.bow is None:
            return out, None
        if not self.bow.reads_text:
            return out, self.bow(ids, mask & present[:, None, None])
        if texts is None or len(texts) != ids.shape[0]:
            raise ValueError("this model's bag reads the lyrics text: give one text per document")
        return out, self.bow.text_bags([t if p else None for t, p in zip(texts, present.tolist())])

    def encode_lyrics(self, ids: torch.Tensor, mask: torch.Tensor, has_lyrics: torch.Tensor,
                      texts: Sequence[str | None] | None = None) -> HANOutput:
        """ids/mask [shape=(batch, lines, words)], has_lyrics [shape=(batch,)] -> vector [batch, lyrics_dim].
        ``texts`` (one per document) are what a bag that reads the text reads."""
        out, bag = self._han_and_bag(ids, mask, has_lyrics, texts)
        if bag is not None:
            bag = bag.to_dense().to(out.vector.device) if bag.is_sparse else bag
            out.vector = torch.cat([out.vector, bag.to(out.vector.dtype)], dim=-1)
        return out

    def head_blocks(self) -> list["Block"]:
        """The blocks of the fused head's input (``classifier``'s columns), in order:
        audio, HAN, bag of words. ``probed`` marks inputs that mean something before
        training (pretrained musicnn features, the bag of words); the paper's CNN and
        the HAN start random."""
        from .head import Block

        mc = self.config
        blocks, at = [], 0
        if mc.use_audio:
            dim = mc.audio_vector_dim
            blocks.append(Block("audio", at, at + dim, mc.audio_branch == "musicnn"))
            at += dim
        if mc.use_lyrics:
            han = 2 * mc.line_hidden
            blocks.append(Block("han", at, at + han, False))
            at += han
            if mc.lyrics_bow:
                blocks.append(Block("bag", at, at + mc.bag_dim, True))
                at += mc.bag_dim
        return blocks

    def trainable_batchnorms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """The batch norms whose running statistics training may re-estimate: all but a
        pretrained backbone's (musicnn keeps the statistics it was shipped with)."""
        frozen = set(self.cnn.backbone.modules()) if isinstance(getattr(self, "cnn", None), MusicnnBranch) else set()
        return [m for m in self.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in frozen]

    def absent_lyrics(self, batch: int) -> torch.Tensor:
        """The "no lyrics" vector, [shape=(batch, lyrics_dim)]: learned HAN part, empty bag of words."""
        vec = self.no_lyrics.unsqueeze(0).expand(batch, -1)
        if self.bow is not None:
            vec = torch.cat([vec, vec.new_zeros((batch, self.bow.width))], dim=-1)
        return vec

    def classify(self, audio_vec: torch.Tensor | None, lyrics_vec: torch.Tensor | None) -> torch.Tensor:
        """Concatenate the branch vectors present in this model -> logits [shape=(batch, n_genres)]."""
        parts = [v for v, used in ((audio_vec, self.config.use_audio), (lyrics_vec, self.config.use_lyrics)) if used]
        if any(p is None for p in parts):
            raise ValueError("classify() needs a vector for every branch of the model")
        dtype = parts[0].dtype
        fused = torch.cat([p.to(dtype) for p in parts], dim=-1)
        return self.classifier(self.dropout(fused))

    def _audio_vectors(self, batch: "FusedBatch") -> torch.Tensor | None:
        """Each row's audio vector [shape=(batch.size, audio_vector_dim)] (None: no audio branch)."""
        if not self.config.use_audio:
            return None
        audio_vec = self.absent_audio(batch.size)
        if batch.audio_pos.numel():
            enc = batch.audio_features if batch.audio_features is not None else self.encode_audio(batch.mel)
            audio_vec = audio_vec.index_copy(0, batch.audio_pos, enc.to(audio_vec.dtype))
        return audio_vec

    def _lyrics_inputs(self, batch: "FusedBatch") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """ids, mask, which documents are present, and which rows have both inputs (None when
        the fusion rule does not apply), of a batch with lyrics rows."""
        ids = batch.ids
        mask = batch.lyrics_mask if batch.lyrics_mask is not None else ids != PAD_ID
        present = batch.lyrics_present if batch.lyrics_present is not None else \
            torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
        both = None
        fused = self.lyrics_scale_with_audio != 1.0 or self.lyrics_offset_with_audio is not None
        if fused and self.config.use_audio and batch.audio_pos.numel():
            both = self._rows_with_both(batch, present & mask.flatten(1).any(dim=1))
        return ids, mask, present, both

    def _row_vectors(self, batch: "FusedBatch") -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                          torch.Tensor | None, HANOutput | None]:
        """Training's pass: every row's audio and lyrics vectors (the head's input; gradients flow
        through them), which rows have both, and the HAN's output."""
        audio_vec = self._audio_vectors(batch)
        lyrics_vec = both = han = None
        if self.config.use_lyrics:
            lyrics_vec = self.absent_lyrics(batch.size)
            if batch.lyrics_pos.numel():
                ids, mask, present, both = self._lyrics_inputs(batch)
                han = self.encode_lyrics(ids, mask, present, batch.lyrics_texts)
                docs = han.vector if batch.lyrics_doc is None else han.vector[batch.lyrics_doc]
                lyrics_vec = lyrics_vec.index_copy(0, batch.lyrics_pos, docs.to(lyrics_vec.dtype))
                if both is not None:
                    lyrics_vec = torch.where(both.unsqueeze(-1), lyrics_vec * self.lyrics_scale_with_audio, lyrics_vec)
        return audio_vec, lyrics_vec, both, han

    def head_inputs(self, batch: "FusedBatch") -> torch.Tensor:
        """What the head reads for each row [shape=(batch.size, head inputs)], built as training
        builds it (a linear probe fits the head on these)."""
        audio_vec, lyrics_vec, _, _ = self._row_vectors(batch)
        parts = [v for v in (audio_vec, lyrics_vec) if v is not None]
        return torch.cat([p.to(parts[0].dtype) for p in parts], dim=-1)

    def _row_logits(self, batch: "FusedBatch") -> tuple[torch.Tensor, torch.Tensor | None, HANOutput | None]:
        """Evaluation's and inference's pass: logits [shape=(batch.size, n_genres)] with each lyrics
        document's share computed once and added to the rows that read it (a bag-wide vector,
        up to ~500,000 columns, per row cost more than the model), which rows have both, the HAN's output."""
        audio_vec = self._audio_vectors(batch)
        weight, bias = self.classifier.weight, self.classifier.bias
        audio_columns = self.config.audio_vector_dim if self.config.use_audio else 0
        logits = (nn.functional.linear(self.dropout(audio_vec), weight[:, :audio_columns], bias)
                  if audio_vec is not None else bias.expand(batch.size, -1))
        both = han = per_doc = None
        if self.config.use_lyrics:
            if batch.lyrics_pos.numel():
                ids, mask, present, both = self._lyrics_inputs(batch)
                han, per_doc = self._document_logits(ids, mask, present, batch.lyrics_texts)
            logits = logits + self._lyrics_logits(batch, per_doc, both).to(logits.dtype)
        return logits, both, han

    def _document_logits(self, ids: torch.Tensor, mask: torch.Tensor, present: torch.Tensor,
                         texts: Sequence[str | None] | None) -> tuple[HANOutput, torch.Tensor]:
        """The HAN's output and each document's lyrics logits (the lyrics columns of the head,
        no bias) [shape=(n_docs, n_genres)], without building the bag's dense vector: a bag that
        reads the text is multiplied as sparse rows."""
        weight = self.classifier.weight[:, self.classifier.weight.shape[1] - self.config.lyrics_dim:]
        han_dim = 2 * self.config.line_hidden
        out, bag = self._han_and_bag(ids, mask, present, texts)
        logits = nn.functional.linear(out.vector.to(weight.dtype), weight[:, :han_dim])
        if bag is not None and bag.is_sparse:
            logits = logits + torch.sparse.mm(bag.to(weight.device), weight[:, han_dim:].float().T).to(logits.dtype)
        elif bag is not None:
            logits = logits + nn.functional.linear(bag.to(weight.dtype), weight[:, han_dim:])
        return out, logits

    def _lyrics_logits(self, batch: "FusedBatch", per_doc: torch.Tensor | None, both: torch.Tensor | None
                       ) -> torch.Tensor:
        """The lyrics columns' share of every row's logits [shape=(batch.size, n_genres)]: each
        document's (``per_doc`` [shape=(n_docs, n_genres)]) given to the rows that read it
        (``lyrics_doc``; None: the i-th reading row the i-th document), the "absent" vector's to
        the rest (its bag part is empty); rows with both inputs scaled by the fusion rule."""
        weight = self.classifier.weight[:, self.classifier.weight.shape[1] - self.config.lyrics_dim:]
        absent = nn.functional.linear(self.no_lyrics.unsqueeze(0).to(weight.dtype),
                                      weight[:, :2 * self.config.line_hidden])  # (1, n_genres)
        rows = absent.expand(batch.size, -1)
        if per_doc is not None and batch.lyrics_pos.numel():
            docs = per_doc if batch.lyrics_doc is None else per_doc[batch.lyrics_doc]
            rows = rows.index_copy(0, batch.lyrics_pos, docs.to(absent.dtype))
        if both is not None:
            rows = torch.where(both.unsqueeze(-1), rows * self.lyrics_scale_with_audio, rows)
        return rows

    @staticmethod
    def _rows_with_both(batch: "FusedBatch", present: torch.Tensor) -> torch.Tensor:
        """Which rows [shape=(batch.size,)] have audio and real lyrics (``present`` per document)."""
        both = torch.zeros(batch.size, dtype=torch.bool, device=present.device)
        has_audio = torch.zeros_like(both)
        has_audio[batch.audio_pos] = True
        real = present if batch.lyrics_doc is None else present[batch.lyrics_doc]
        both[batch.lyrics_pos] = has_audio[batch.lyrics_pos] & real
        return both

    def forward(self, batch: "FusedBatch", *, return_attention: bool = False) -> ModelOutput | torch.Tensor:
        """Logits [shape=(batch.size, n_genres)]: the one fused pass that training,
        evaluation and inference all call (inference then averages a track's windows).

        Rows without a modality get its learned "absent" vector; each branch runs only
        on the rows that have its input. With ``return_attention`` a :class:`ModelOutput`
        carries the HAN's attention of each lyrics document.
        """
        if self.training:
            audio_vec, lyrics_vec, both, han = self._row_vectors(batch)
            logits = self.classify(audio_vec, lyrics_vec)
        else:
            logits, both, han = self._row_logits(batch)
        word_att = han.word_attention if han is not None else None
        line_att = han.line_attention if han is not None else None
        if both is not None and self.lyrics_offset_with_audio is not None:
            logits = logits + both.unsqueeze(-1) * self.lyrics_offset_with_audio.to(logits)
        if return_attention:
            return ModelOutput(logits, word_att, line_att)
        return logits


@dataclass
class FusedBatch:
    """The input of one :meth:`GenreModel.forward` call: ``size`` rows (training examples,
    or the windows of a batch of tracks at inference) and which rows have which input.

    audio_pos [shape=(n_audio,)]: the rows with audio, whose input is ``mel``
    [shape=(n_audio, n_mels, frames)] or, when the audio branch already ran (the
    feature cache), ``audio_features`` [shape=(n_audio, audio_vector_dim)].
    lyrics_pos [shape=(n_lyr,)]: the rows that read lyrics. ``ids`` (and ``lyrics_mask``)
    [shape=(n_docs, lines, words)] hold the documents; ``lyrics_doc`` [shape=(n_lyr,)]
    says which document each of those rows reads (None: the i-th row the i-th
    document), so a track's windows share one HAN pass; ``lyrics_present``
    [shape=(n_docs,)] marks documents that are really there (None: all).
    """

    size: int
    audio_pos: torch.Tensor
    mel: torch.Tensor | None = None
    audio_features: torch.Tensor | None = None
    lyrics_pos: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    ids: torch.Tensor | None = None
    lyrics_mask: torch.Tensor | None = None
    lyrics_present: torch.Tensor | None = None
    lyrics_doc: torch.Tensor | None = None
    #: The documents' texts (one per ``ids`` document): what a bag that reads the text reads.
    lyrics_texts: Sequence[str | None] | None = None

    @classmethod
    def full(cls, *, mel: torch.Tensor | None = None, ids: torch.Tensor | None = None,
             lyrics_mask: torch.Tensor | None = None,
             lyrics_texts: Sequence[str | None] | None = None) -> "FusedBatch":
        """Every row has the inputs given: ``mel`` and/or ``ids`` [shape=(batch, ...)] (and the
        lyrics ``lyrics_texts``, one per row)."""
        size = next(t.shape[0] for t in (mel, ids) if t is not None)
        device = next(t.device for t in (mel, ids) if t is not None)
        rows = torch.arange(size, device=device)
        empty = rows[:0]
        return cls(size, rows if mel is not None else empty, mel=mel,
                   lyrics_pos=rows if ids is not None else empty, ids=ids, lyrics_mask=lyrics_mask,
                   lyrics_texts=lyrics_texts)
