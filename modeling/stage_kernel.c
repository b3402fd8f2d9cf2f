/* The ranking stage's candidates and their sparse features, for m shoppers, in one call.
 *
 * What modeling/reranker.py's candidate_features does with a few hundred numpy calls per request (each costing
 * microseconds of interpreter and dispatch for a few hundred values): the item-item, recent item-item and
 * sequential-rules scores of each history (weighted sums of a sparse matrix's rows), the rows of the last and
 * previous products' transitions, each source's best candidates, the union of every source's proposals, and the
 * features read from those scores. The values are those of the numpy code, bit for bit: the same float64 sums in
 * the same order, the same float32 roundings, the same ties (tests/modeling/test_stage_kernel.py compares both).
 * What needs a transcendental function (recency decays, logarithms) or a dot product of float vectors (two-tower
 * scores) stays in numpy, whose results it could not promise to match. The text features are dot products of 8-bit
 * codes, which are integers and exact in any order: text_features (the end of this file) computes them.
 *
 * modeling/native.py compiles this file with the machine's C compiler on first use and loads it with ctypes;
 * without a compiler the numpy code serves. The call keeps no state between calls but per-thread scratch
 * buffers (each thread its own: the call runs without the GIL), so any number of threads may call it at once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#define ERROR_MEMORY (-1)
#define ERROR_BOUND (-2)

/* A square CSR matrix: row pointers and column indices each int32 or int64 (wide), float32 values. */
typedef struct {
  const void* indptr;
  int32_t indptr_wide;
  const void* indices;
  int32_t indices_wide;
  const float* data;
} Csr;

static inline int64_t csr_ptr(const Csr* matrix, int64_t row) {
  return matrix->indptr_wide ? ((const int64_t*) matrix->indptr)[row] : (int64_t) ((const int32_t*) matrix->indptr)[row];
}

static inline int64_t csr_index(const Csr* matrix, int64_t at) {
  return matrix->indices_wide ? ((const int64_t*) matrix->indices)[at] : (int64_t) ((const int32_t*) matrix->indices)[at];
}

/* How many entries ahead the loops over items ask for an item's per-item values (prefetch): the items are spread
   over arrays of n entries each, so nearly every first read of one misses the cache; asked for this far ahead, the
   reads overlap instead of waiting one after another. Prefetching changes no value. */
#define AHEAD 8

#define PREFETCH(address) __builtin_prefetch((const void*) (address), 0, 1)
#define PREFETCH_WRITE(address) __builtin_prefetch((const void*) (address), 1, 1)

/* Per-thread scratch, grown as needed and kept for the thread's next call; the n-long arrays are all 0 between calls
   (each call clears what it touched). */
typedef struct { float value; int64_t item; } Scored;

typedef struct {
  double* sums;            /* (n, 3): an item's item-item sums (history's and recent half-life) and sequence sum */
  unsigned char* touched;  /* (n,): bit 1, touched by the item-item gather; bit 2, by the sequence gather */
  unsigned char* proposals;  /* (n,): how many sources proposed the item */
  int64_t n;
  int64_t* columns[2];     /* the items each gather touched, each once, in no order */
  int64_t width[2];
  int64_t* proposed;       /* a shopper's proposed items */
  int64_t proposed_size;
  Scored* scored;          /* a source's eligible entries */
  int64_t scored_size;
} Scratch;

static __thread Scratch scratch;

static int reserve_items(int64_t n) {
  if (scratch.n >= n) return 0;
  double* sums = (double*) calloc((size_t) (3 * n), sizeof(double));
  unsigned char* touched = (unsigned char*) calloc((size_t) n, 1);
  unsigned char* proposals = (unsigned char*) calloc((size_t) n, 1);
  if (sums == NULL || touched == NULL || proposals == NULL) {
    free(sums);
    free(touched);
    free(proposals);
    return ERROR_MEMORY;
  }
  free(scratch.sums);
  free(scratch.touched);
  free(scratch.proposals);
  scratch.sums = sums;
  scratch.touched = touched;
  scratch.proposals = proposals;
  scratch.n = n;
  return 0;
}

/* Grow *buffer (of *size items of `item` bytes) to hold `needed` items at least. */
static int grow(void** buffer, int64_t* size, int64_t needed, size_t item) {
  if (*size >= needed) return 0;
  int64_t wanted = needed > 2 * *size ? needed : 2 * *size;
  void* bigger = realloc(*buffer, (size_t) wanted * item);
  if (bigger == NULL) return ERROR_MEMORY;
  *buffer = bigger;
  *size = wanted;
  return 0;
}

/* The weighted sum of the matrix rows at cols[0..count) (ascending) under `weightings` weightings (weights
   (weightings, stride)), added into scratch.sums[3 * item + first + w]; the items touched are listed once in
   scratch.columns[slot] (marked with `bit`). The float64 sums add each entry's value times its weight in entry
   order, as numpy's bincount does. Returns how many items, or an error. */
static int64_t gather(const Csr* matrix, const int64_t* cols, int64_t count, const double* weights, int64_t stride,
                      int weightings, int slot, int first, unsigned char bit) {
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) total += csr_ptr(matrix, cols[i] + 1) - csr_ptr(matrix, cols[i]);
  if (grow((void**) &scratch.columns[slot], &scratch.width[slot], total, sizeof(int64_t)) != 0) return ERROR_MEMORY;
  int64_t* listed = scratch.columns[slot];
  int64_t touched = 0;
  for (int64_t i = 0; i < count; ++i) {
    int64_t c = cols[i];
    int64_t end = csr_ptr(matrix, c + 1);
    for (int64_t j = csr_ptr(matrix, c); j < end; ++j) {
      if (j + AHEAD < end) {
        int64_t ahead = csr_index(matrix, j + AHEAD);
        PREFETCH_WRITE(&scratch.sums[3 * ahead + first]);
        PREFETCH_WRITE(&scratch.touched[ahead]);
      }
      int64_t item = csr_index(matrix, j);
      if (!(scratch.touched[item] & bit)) {
        scratch.touched[item] |= bit;
        listed[touched++] = item;
      }
      double value = (double) matrix->data[j];
      for (int w = 0; w < weightings; ++w) scratch.sums[3 * item + first + w] += value * weights[w * stride + i];
    }
  }
  return touched;
}

/* An entry of a history: an item and its place (its position in the history, or how far back it is). */
typedef struct { int64_t item; int64_t place; } Placed;

static int compare_placed(const void* a, const void* b) {
  const Placed* x = (const Placed*) a;
  const Placed* y = (const Placed*) b;
  if (x->item != y->item) return (x->item > y->item) - (x->item < y->item);
  return (x->place > y->place) - (x->place < y->place);
}

/* Sort by item, then place: insertion for a few entries, qsort for long histories. */
static void sort_placed(Placed* a, int64_t count) {
  if (count > 32) {
    qsort(a, (size_t) count, sizeof(Placed), compare_placed);
    return;
  }
  for (int64_t i = 1; i < count; ++i) {
    Placed value = a[i];
    int64_t j = i - 1;
    while (j >= 0 && (a[j].item > value.item || (a[j].item == value.item && a[j].place > value.place))) {
      a[j + 1] = a[j];
      --j;
    }
    a[j + 1] = value;
  }
}

static __thread Placed* placed = NULL;
static __thread int64_t placed_size = 0;
static __thread int64_t* entry_items = NULL;
static __thread int64_t entry_items_size = 0;
static __thread double* entry_weights = NULL;
static __thread int64_t entry_weights_size = 0;

/* Room for the entries of a history of `count` interactions. */
static int reserve_entries(int64_t count) {
  if (grow((void**) &placed, &placed_size, count, sizeof(Placed)) != 0
      || grow((void**) &entry_items, &entry_items_size, count, sizeof(int64_t)) != 0
      || grow((void**) &entry_weights, &entry_weights_size, 2 * count, sizeof(double)) != 0)
    return ERROR_MEMORY;
  return 0;
}

/* A history's item-item entries (HistoryBatch.entries_each): its items once each, ascending, into entry_items, with
   weights (2, count) into entry_weights: under each half-life whose bit is set in `decayed`, the sum of the item's
   decays (in history order, as bincount adds them) capped at 1; otherwise 1. Returns how many, or an error. */
static int64_t history_entries(const int64_t* items, const float* decays, int64_t stride, int64_t count,
                               int decayed) {
  if (reserve_entries(count) != 0) return ERROR_MEMORY;
  for (int64_t i = 0; i < count; ++i) {
    placed[i].item = items[i];
    placed[i].place = i;
  }
  sort_placed(placed, count);
  int64_t unique = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (i == 0 || placed[i].item != placed[i - 1].item) {
      entry_items[unique] = placed[i].item;
      entry_weights[unique] = 0.0;
      entry_weights[count + unique] = 0.0;
      ++unique;
    }
    for (int w = 0; w < 2; ++w) entry_weights[w * count + unique - 1] += (double) decays[w * stride + placed[i].place];
  }
  for (int w = 0; w < 2; ++w) {
    for (int64_t i = 0; i < unique; ++i) {
      double* weight = &entry_weights[w * count + i];
      *weight = (decayed >> w & 1) ? (*weight < 1.0 ? *weight : 1.0) : 1.0;
    }
  }
  return unique;
}

/* A history's sequential-rules entries (HistoryBatch.recent_entries): its `length` most recent products, a run of
   one product once, the most recent weighted 1, the one before 1/2, ... (a product met twice sums its weights, the
   most recent first), ascending, into entry_items and entry_weights (1, count). Returns how many, or an error. */
static int64_t sequence_entries(const int64_t* items, int64_t count, int64_t length) {
  if (reserve_entries(count) != 0) return ERROR_MEMORY;
  int64_t back = 0;
  for (int64_t i = count - 1; i >= 0 && back < length; --i) {
    if (i + 1 < count && items[i + 1] == items[i]) continue;  /* the run's last product stands for it */
    placed[back].item = items[i];
    placed[back].place = back;
    ++back;
  }
  sort_placed(placed, back);
  int64_t unique = 0;
  for (int64_t i = 0; i < back; ++i) {
    if (i == 0 || placed[i].item != placed[i - 1].item) {
      entry_items[unique] = placed[i].item;
      entry_weights[unique] = 0.0;
      ++unique;
    }
    entry_weights[unique - 1] += 1.0 / ((double) placed[i].place + 1.0);
  }
  return unique;
}

/* Clear what a gather left in the scratch. */
static void clear_gathered(int slot, int64_t count, int first, int weightings, unsigned char bit) {
  for (int64_t p = 0; p < count; ++p) {
    int64_t item = scratch.columns[slot][p];
    for (int w = 0; w < weightings; ++w) scratch.sums[3 * item + first + w] = 0.0;
    scratch.touched[item] &= (unsigned char) ~bit;
  }
}

static int is_excluded(const int64_t* keys, int64_t count, int64_t key) {
  int64_t low = 0, high = count;
  while (low < high) {
    int64_t middle = low + (high - low) / 2;
    if (keys[middle] < key) low = middle + 1; else high = middle;
  }
  return low < count && keys[low] == key;
}

/* Whether x comes before y: the larger value first, then the smaller item (the numpy code's order). */
static inline int before(const Scored* x, const Scored* y) {
  return x->value > y->value || (x->value == y->value && x->item < y->item);
}

/* Rearrange a[0..count) so that its k first entries are the k first in `before` order (in no order among them). */
static void select_first(Scored* a, int64_t count, int64_t k) {
  int64_t low = 0, high = count - 1;
  while (low < high) {
    int64_t middle = low + (high - low) / 2;
    /* median of three as the pivot, moved to a[high] */
    if (before(&a[middle], &a[low])) { Scored t = a[middle]; a[middle] = a[low]; a[low] = t; }
    if (before(&a[high], &a[low])) { Scored t = a[high]; a[high] = a[low]; a[low] = t; }
    if (before(&a[middle], &a[high])) { Scored t = a[middle]; a[middle] = a[high]; a[high] = t; }
    Scored pivot = a[high];
    int64_t store = low;
    for (int64_t i = low; i < high; ++i) {
      if (before(&a[i], &pivot)) { Scored t = a[i]; a[i] = a[store]; a[store] = t; ++store; }
    }
    { Scored t = a[store]; a[store] = a[high]; a[high] = t; }
    if (store == k - 1 || store == k) return;
    if (store < k) low = store + 1; else high = store - 1;
  }
}

/* Propose the `k` first of `count` entries (items each once; values read by `value_of`) in `before` order among
   those with a positive value, neither excluded nor disallowed. Each proposal counts once more in
   scratch.proposals; a first one is appended to `proposed`. */
static int propose_best(const Scored* entries, int64_t count, int64_t k, int64_t r, int64_t n,
                        const int64_t* excluded, int64_t n_excluded, const unsigned char* allowed,
                        int64_t* proposed, int64_t* n_proposed) {
  if (k <= 0 || count == 0) return 0;
  if (grow((void**) &scratch.scored, &scratch.scored_size, count, sizeof(Scored)) != 0) return ERROR_MEMORY;
  int64_t eligible = 0;
  for (int64_t p = 0; p < count; ++p) {
    if (allowed != NULL && p + AHEAD < count) PREFETCH(&allowed[entries[p + AHEAD].item]);
    int64_t item = entries[p].item;
    if (!(entries[p].value > 0.0f)) continue;
    if (allowed != NULL && !allowed[item]) continue;
    if (n_excluded > 0 && is_excluded(excluded, n_excluded, r * n + item)) continue;
    scratch.scored[eligible++] = entries[p];
  }
  int64_t kept = eligible < k ? eligible : k;
  if (kept < eligible) select_first(scratch.scored, eligible, kept);
  for (int64_t p = 0; p < kept; ++p) {
    int64_t item = scratch.scored[p].item;
    if (scratch.proposals[item]++ == 0) proposed[(*n_proposed)++] = item;
  }
  return 0;
}

static __thread Scored* listing = NULL;
static __thread int64_t listing_size = 0;

/* The gathered items of `slot` with their sums of column `at` as float32 (the numpy code's values), into listing. */
static int list_sums(int slot, int64_t count, int at) {
  if (grow((void**) &listing, &listing_size, count, sizeof(Scored)) != 0) return ERROR_MEMORY;
  for (int64_t p = 0; p < count; ++p) {
    int64_t item = scratch.columns[slot][p];
    listing[p].item = item;
    listing[p].value = (float) scratch.sums[3 * item + at];
  }
  return 0;
}

/* A matrix row's items and values (row -1: none), into listing. Returns how many, or an error. */
static int64_t list_row(const Csr* matrix, int64_t row) {
  if (row < 0) return 0;
  int64_t begin = csr_ptr(matrix, row), end = csr_ptr(matrix, row + 1);
  if (grow((void**) &listing, &listing_size, end - begin, sizeof(Scored)) != 0) return ERROR_MEMORY;
  for (int64_t j = begin; j < end; ++j) {
    listing[j - begin].item = csr_index(matrix, j);
    listing[j - begin].value = matrix->data[j];
  }
  return end - begin;
}

static float csr_value_at(const Csr* matrix, int64_t row, int64_t column) {
  if (row < 0) return 0.0f;
  int64_t low = csr_ptr(matrix, row), end = csr_ptr(matrix, row + 1), high = end;
  while (low < high) {
    int64_t middle = low + (high - low) / 2;
    if (csr_index(matrix, middle) < column) low = middle + 1; else high = middle;
  }
  return (low < end && csr_index(matrix, low) == column) ? matrix->data[low] : 0.0f;
}

static void sort_items(int64_t* a, int64_t count) {
  /* insertion sort below 24 entries, quicksort (median of three) above */
  while (count > 24) {
    int64_t middle = count / 2, last = count - 1, t;
    if (a[middle] < a[0]) { t = a[middle]; a[middle] = a[0]; a[0] = t; }
    if (a[last] < a[0]) { t = a[last]; a[last] = a[0]; a[0] = t; }
    if (a[last] < a[middle]) { t = a[last]; a[last] = a[middle]; a[middle] = t; }
    int64_t pivot = a[middle], i = 0, j = last;
    while (i <= j) {
      while (a[i] < pivot) ++i;
      while (a[j] > pivot) --j;
      if (i <= j) { t = a[i]; a[i] = a[j]; a[j] = t; ++i; --j; }
    }
    if (j + 1 < count - i) { sort_items(a, j + 1); a += i; count -= i; }
    else { sort_items(a + i, count - i); count = j + 1; }
  }
  for (int64_t i = 1; i < count; ++i) {
    int64_t value = a[i], j = i - 1;
    while (j >= 0 && a[j] > value) { a[j + 1] = a[j]; --j; }
    a[j + 1] = value;
  }
}

/* Columns of the features this call writes, in `columns` (-1: not read, left as they are). */
enum {
  COLUMN_ITEM_ITEM, COLUMN_ITEM_ITEM_SHARE, COLUMN_RECENT, COLUMN_RECENT_SHARE, COLUMN_SEQUENCE, COLUMN_SEQUENCE_SHARE,
  COLUMN_TRANSITION_LAST, COLUMN_TRANSITION_PREVIOUS, COLUMN_POPULARITY_RANK, COLUMN_HISTORY_LENGTH,
  COLUMN_SOURCE_COUNT, COLUMN_CATEGORY_MATCH, COLUMN_CATEGORY_RECENT, COLUMN_BRAND_MATCH, COLUMN_PRICE_RATIO, COLUMNS
};

/* Sources' proposals per shopper: two-tower, item-item, recent item-item, transitions, sequential rules, popular. */
enum { COUNT_ITEM_ITEM, COUNT_RECENT, COUNT_TRANSITIONS, COUNT_SEQUENCE, COUNT_POPULAR, COUNTS };

static void write_share(float* features, int64_t f, int64_t entries, int64_t value_column, int64_t share_column) {
  if (value_column < 0 || share_column < 0) return;
  float best = -__builtin_inff();
  for (int64_t p = 0; p < entries; ++p) {
    float value = features[p * f + value_column];
    if (value > best) best = value;
  }
  for (int64_t p = 0; p < entries; ++p) {
    float value = features[p * f + value_column];
    features[p * f + share_column] = best > 0.0f ? (float) ((double) value / (double) best) : 0.0f;
  }
}

/* numpy's sum of n float32 values as its reductions add them (pairwise_sum: eight running sums from eight values
   on, then the rest one by one; below eight, one by one), for n up to 128. */
static float numpy_sum(const float* a, int64_t n) {
  float result;
  if (n < 8) {
    result = 0.0f;
    for (int64_t i = 0; i < n; ++i) result += a[i];
    return result;
  }
  float r[8];
  for (int j = 0; j < 8; ++j) r[j] = a[j];
  int64_t i;
  for (i = 8; i < n - (n % 8); i += 8)
    for (int j = 0; j < 8; ++j) r[j] += a[i + j];
  result = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) result += a[i];
  return result;
}

static int compare_float(const void* a, const void* b) {
  float x = *(const float*) a, y = *(const float*) b;
  return (x > y) - (x < y);
}

#define MAX_RECENT 128

/* A shopper's most recent products as the attribute features read them (reranker._attribute_features): the last
   `width` of the history, right-aligned (-1 pads), their categories and brands (-1: none or unknown), their recency
   decays (`decay`, numpy's), the decays' sum and the median of their known prices (NaN: none). */
typedef struct {
  int64_t width, present;
  int32_t category[MAX_RECENT], brand[MAX_RECENT];
  float decay[MAX_RECENT], total, median;
} Recent;

static void recent_of(const int64_t* items, int64_t count, int64_t width, const float* decay, const int32_t* category,
                      const int32_t* brand, const float* price, Recent* recent) {
  float known[MAX_RECENT];
  int64_t n_known = 0, pads = width - (count < width ? count : width);
  recent->width = width;
  recent->present = width - pads;
  for (int64_t j = 0; j < width; ++j) {
    int64_t item = j < pads ? -1 : items[count - width + j];
    recent->category[j] = item >= 0 ? category[item] : -1;
    recent->brand[j] = item >= 0 ? brand[item] : -1;
    recent->decay[j] = decay[j];
    if (item >= 0 && isfinite(price[item]) && price[item] > 0.0f) known[n_known++] = price[item];
  }
  recent->total = numpy_sum(recent->decay, width);
  qsort(known, (size_t) n_known, sizeof(float), compare_float);
  recent->median = n_known == 0 ? NAN : (known[(n_known - 1) / 2] + known[n_known / 2]) / 2.0f;
}

/* The attribute features of one candidate (the price's ratio to the median: the caller takes its logarithm). */
static void write_attributes(const Recent* recent, int64_t item, const int32_t* category, const int32_t* brand,
                             const float* price, const int64_t* columns, float* row) {
  float weighted[MAX_RECENT];
  int64_t same_category = 0, same_brand = 0;
  for (int64_t j = 0; j < recent->width; ++j) {
    int same = recent->category[j] >= 0 && category[item] == recent->category[j];
    same_category += same;
    weighted[j] = same ? recent->decay[j] : 0.0f;
    same_brand += recent->brand[j] >= 0 && brand[item] == recent->brand[j];
  }
  double count = (double) (recent->present > 0 ? recent->present : 1);
  if (columns[COLUMN_CATEGORY_MATCH] >= 0) row[columns[COLUMN_CATEGORY_MATCH]] = (float) ((double) same_category / count);
  if (columns[COLUMN_BRAND_MATCH] >= 0) row[columns[COLUMN_BRAND_MATCH]] = (float) ((double) same_brand / count);
  if (columns[COLUMN_CATEGORY_RECENT] >= 0)
    row[columns[COLUMN_CATEGORY_RECENT]] = numpy_sum(weighted, recent->width) / (recent->total > 0.0f ? recent->total
                                                                                                       : 1.0f);
  if (columns[COLUMN_PRICE_RATIO] >= 0) row[columns[COLUMN_PRICE_RATIO]] = price[item] / recent->median;
}

/* Candidates of m shoppers and their sparse features.
 *
 * Inputs: n items; `excluded` sorted keys r * n + item never proposed; `allowed` (n,) or NULL; the item-item,
 * sequence and transition matrices; the histories, oldest first (shopper r's items history_items[history_ptr[r] ..
 * history_ptr[r + 1]), history_ptr[0] = 0), each interaction's decays (2, H) float32 under the history's and the
 * recent half-life (bit w of `decayed`: half-life w is positive, else its weights are 1); how many recent products
 * the sequential rules read; the popular order (n_order items, allowed ones), how many excluded items each shopper
 * has; the two-tower's top (m, tt_width), -1 pads; counts per source (COUNTS); popularity ranks (n,); each
 * shopper's history-length feature (m,); the products' category and brand codes (n,) int32 and prices (n,) float32
 * with each shopper's `recent_width` most recent products' decays (m, recent_width) float32 for the attribute features
 * (category NULL: none of them); the feature columns (COLUMNS) of rows of f floats.
 *
 * Outputs, entry by entry, shoppers in order and each shopper's candidates ascending: out_rows, out_items and rows
 * of `features` (bound, f), whose other columns are left as they are. Returns the entries written, or a negative
 * error (ERROR_MEMORY, ERROR_BOUND).
 */
int64_t stage_candidates(
    int64_t m, int64_t n, const int64_t* excluded, int64_t n_excluded, const unsigned char* allowed,
    const Csr* item_item, const Csr* sequence, const Csr* transitions,
    const int64_t* history_ptr, const int64_t* history_items, const float* decays, int64_t decayed,
    int64_t sequence_length,
    const int64_t* popular_order, int64_t n_order, const int64_t* excluded_counts,
    const int64_t* two_tower, int64_t tt_width, const int64_t* counts,
    const float* popularity_rank, const double* history_length,
    const int32_t* category, const int32_t* brand, const float* price, const float* recent_decay, int64_t recent_width,
    int64_t f, const int64_t* columns,
    int64_t bound, int64_t* out_rows, int64_t* out_items, float* features) {
  if (recent_width > MAX_RECENT) return ERROR_BOUND;
  if (reserve_items(n) != 0) return ERROR_MEMORY;
  int64_t longest = tt_width + counts[COUNT_ITEM_ITEM] + counts[COUNT_RECENT] + counts[COUNT_TRANSITIONS]
                    + counts[COUNT_SEQUENCE] + counts[COUNT_POPULAR];
  if (grow((void**) &scratch.proposed, &scratch.proposed_size, longest > 0 ? longest : 1, sizeof(int64_t)) != 0)
    return ERROR_MEMORY;
  int64_t written = 0, total = history_ptr[m] - history_ptr[0];
  int64_t own_begin = 0;  /* where shopper r's keys begin in `excluded` (its keys lie in [r * n, (r + 1) * n)) */
  for (int64_t r = 0; r < m; ++r) {
    /* Shopper r's own excluded keys: the searches below look among them only (the same answers). */
    while (own_begin < n_excluded && excluded[own_begin] < r * n) ++own_begin;
    int64_t own_end = own_begin;
    while (own_end < n_excluded && excluded[own_end] < (r + 1) * n) ++own_end;
    const int64_t* own_excluded = excluded + own_begin;
    int64_t n_own = own_end - own_begin;
    const int64_t* items = history_items + history_ptr[r];
    int64_t count = history_ptr[r + 1] - history_ptr[r];
    int64_t last = count >= 1 ? items[count - 1] : -1, previous = count >= 2 ? items[count - 2] : -1;
    int64_t n_entries = history_entries(items, decays + history_ptr[r], total, count, (int) decayed);
    if (n_entries < 0) return n_entries;
    int64_t n_item = gather(item_item, entry_items, n_entries, entry_weights, count, 2, 0, 0, 1);
    if (n_item < 0) return n_item;
    n_entries = sequence_entries(items, count, sequence_length);
    int64_t n_sequence = n_entries < 0 ? n_entries : gather(sequence, entry_items, n_entries, entry_weights, count,
                                                             1, 1, 2, 2);
    if (n_sequence < 0) {
      clear_gathered(0, n_item, 0, 2, 1);
      return n_sequence;
    }
    int64_t* proposed = scratch.proposed;
    int64_t n_proposed = 0;
    for (int64_t j = 0; j < tt_width; ++j) {
      int64_t item = two_tower[r * tt_width + j];
      if (item >= 0 && scratch.proposals[item]++ == 0) proposed[n_proposed++] = item;
    }
    int failed = list_sums(0, n_item, 0)
                 || propose_best(listing, n_item, counts[COUNT_ITEM_ITEM], r, n, own_excluded, n_own, allowed,
                                 proposed, &n_proposed)
                 || list_sums(0, n_item, 1)
                 || propose_best(listing, n_item, counts[COUNT_RECENT], r, n, own_excluded, n_own, allowed,
                                 proposed, &n_proposed)
                 || list_sums(1, n_sequence, 2)
                 || propose_best(listing, n_sequence, counts[COUNT_SEQUENCE], r, n, own_excluded, n_own, allowed,
                                 proposed, &n_proposed);
    int64_t n_following = failed ? 0 : list_row(transitions, last);
    failed = failed || n_following < 0
             || propose_best(listing, n_following, counts[COUNT_TRANSITIONS], r, n, own_excluded, n_own, allowed,
                             proposed, &n_proposed);
    if (!failed) {
      int64_t reads = counts[COUNT_POPULAR] + excluded_counts[r];
      if (reads > n_order) reads = n_order;
      for (int64_t j = 0, taken = 0; j < reads && taken < counts[COUNT_POPULAR]; ++j) {
        int64_t item = popular_order[j];
        if (n_own > 0 && is_excluded(own_excluded, n_own, r * n + item)) continue;
        ++taken;
        if (scratch.proposals[item]++ == 0) proposed[n_proposed++] = item;
      }
    }
    if (failed || written + n_proposed > bound) {
      for (int64_t p = 0; p < n_proposed; ++p) scratch.proposals[proposed[p]] = 0;
      clear_gathered(0, n_item, 0, 2, 1);
      clear_gathered(1, n_sequence, 2, 1, 2);
      return failed ? ERROR_MEMORY : ERROR_BOUND;
    }

    sort_items(proposed, n_proposed);
    Recent recent;
    int attributes = category != NULL && recent_width > 0;
    if (attributes)
      recent_of(items, count, recent_width, recent_decay + r * recent_width, category, brand, price, &recent);
    float* rows = features + written * f;
    for (int64_t p = 0; p < n_proposed; ++p) {
      if (p + AHEAD < n_proposed) {
        int64_t ahead = proposed[p + AHEAD];
        PREFETCH(&scratch.sums[3 * ahead]);
        PREFETCH(&popularity_rank[ahead]);
        if (attributes) {
          PREFETCH(&category[ahead]);
          PREFETCH(&brand[ahead]);
          PREFETCH(&price[ahead]);
        }
      }
      int64_t item = proposed[p];
      float* row = rows + p * f;
      const double* sums = scratch.sums + 3 * item;  /* 0 where no gather touched the item */
      out_rows[written + p] = r;
      out_items[written + p] = item;
      if (columns[COLUMN_ITEM_ITEM] >= 0) row[columns[COLUMN_ITEM_ITEM]] = (float) sums[0];
      if (columns[COLUMN_RECENT] >= 0) row[columns[COLUMN_RECENT]] = (float) sums[1];
      if (columns[COLUMN_SEQUENCE] >= 0) row[columns[COLUMN_SEQUENCE]] = (float) sums[2];
      if (columns[COLUMN_TRANSITION_LAST] >= 0)
        row[columns[COLUMN_TRANSITION_LAST]] = csr_value_at(transitions, last, item);
      if (columns[COLUMN_TRANSITION_PREVIOUS] >= 0)
        row[columns[COLUMN_TRANSITION_PREVIOUS]] = csr_value_at(transitions, previous, item);
      if (columns[COLUMN_POPULARITY_RANK] >= 0) row[columns[COLUMN_POPULARITY_RANK]] = popularity_rank[item];
      if (columns[COLUMN_HISTORY_LENGTH] >= 0) row[columns[COLUMN_HISTORY_LENGTH]] = (float) history_length[r];
      if (columns[COLUMN_SOURCE_COUNT] >= 0) row[columns[COLUMN_SOURCE_COUNT]] = (float) scratch.proposals[item];
      if (attributes) write_attributes(&recent, item, category, brand, price, columns, row);
      scratch.proposals[item] = 0;
    }
    clear_gathered(0, n_item, 0, 2, 1);
    clear_gathered(1, n_sequence, 2, 1, 2);
    write_share(rows, f, n_proposed, columns[COLUMN_ITEM_ITEM], columns[COLUMN_ITEM_ITEM_SHARE]);
    write_share(rows, f, n_proposed, columns[COLUMN_RECENT], columns[COLUMN_RECENT_SHARE]);
    write_share(rows, f, n_proposed, columns[COLUMN_SEQUENCE], columns[COLUMN_SEQUENCE_SHARE]);
    written += n_proposed;
  }
  return written;
}

/* The dot product of two rows of t 8-bit codes, as an integer: exact, whatever the order of the additions (the
   compiler may vectorise it freely). Each product is at most 127 * 127, so t up to 133,000 fits in 32 bits. */
static inline int32_t dot_codes(const int8_t* a, const int8_t* b, int64_t t) {
  int32_t sum = 0;
  for (int64_t k = 0; k < t; k++) sum += (int32_t) a[k] * (int32_t) b[k];
  return sum;
}

/* The text features of the candidates of m shoppers whose products' text vectors are 8-bit codes with a scale per
 * row (a product's vector is codes[item] * scales[item]), as reranker.py's numpy code computes them (values bit for
 * bit, tests/modeling/test_stage_kernel.py):
 *   similarity to history product i: ((float) dot(codes[c], codes[h_i]) * scales[c]) * scales[h_i], float32 (the
 *     integer dot is exact, so the order of its additions changes nothing);
 *   text_last: the similarity to the shopper's last product;
 *   text_history: the similarities summed in float64 in history order, over (count * the norm of the history's
 *     mean vector), as float32; 0 where that norm is 0. The norm is sqrt(sum over i, j in order of
 *     (scales[h_i] * scales[h_j]) * dot(codes[h_i], codes[h_j]), in float64) / count;
 *   nearest_age_days: (the last product's time - the time of the history product of highest similarity, among
 *     each product's first place in the history, the earliest such on ties) / 86400; NaN for a shopper without a
 *     history.
 *
 * Shopper r's history is the last counts[r] entries of row r of items and stamps ((m, width), oldest first); its
 * candidates are cand[starts[r] .. starts[r] + sizes[r]) and their rows of `features` (f columns) the same places;
 * a column of -1 is not written. Returns 0, or ERROR_MEMORY.
 */
int64_t text_features(
    int64_t m, int64_t width, int64_t t, const int8_t* codes, const float* scales,
    const int64_t* items, const int64_t* stamps, const int64_t* counts,
    const int64_t* cand, const int64_t* starts, const int64_t* sizes,
    float* features, int64_t f, int64_t column_history, int64_t column_last, int64_t column_age) {
  unsigned char* first = (unsigned char*) malloc((size_t) (width > 0 ? width : 1));
  if (!first) return ERROR_MEMORY;
  for (int64_t r = 0; r < m; r++) {
    const int64_t count = counts[r], start = starts[r], size = sizes[r];
    if (size == 0) continue;
    if (count == 0) {
      if (column_age >= 0)
        for (int64_t j = 0; j < size; j++) features[(start + j) * f + column_age] = NAN;
      continue;
    }
    const int64_t* history = items + r * width + (width - count);
    const int64_t* times = stamps + r * width + (width - count);
    double total = 0.0;  /* the squared norm of the history's summed vector */
    for (int64_t i = 0; i < count; i++) {
      first[i] = 1;
      for (int64_t k = 0; k < i; k++)
        if (history[k] == history[i]) { first[i] = 0; break; }
      const int8_t* left = codes + history[i] * t;
      for (int64_t j = 0; j < count; j++)
        total += ((double) scales[history[i]] * (double) scales[history[j]])
                 * (double) dot_codes(left, codes + history[j] * t, t);
    }
    const double norm = sqrt(total > 0.0 ? total : 0.0) / (double) count;
    for (int64_t j = 0; j < size; j++) {
      if (j + AHEAD < size) {  /* the candidate rows are read at random from the whole catalogue's */
        const int8_t* ahead = codes + cand[start + j + AHEAD] * t;
        for (int64_t line = 0; line < t; line += 64) PREFETCH(ahead + line);
      }
      const int64_t item = cand[start + j];
      const int8_t* row = codes + item * t;
      const float scale = scales[item];
      double sum = 0.0;
      float last = 0.0f, best = 0.0f;
      int64_t nearest = -1;
      for (int64_t i = 0; i < count; i++) {
        const float similarity = ((float) dot_codes(row, codes + history[i] * t, t) * scale) * scales[history[i]];
        sum += (double) similarity;
        last = similarity;
        if (first[i] && (nearest < 0 || similarity > best)) {
          best = similarity;
          nearest = i;
        }
      }
      float* out = features + (start + j) * f;
      if (column_last >= 0) out[column_last] = last;
      if (column_history >= 0) out[column_history] = norm > 0.0 ? (float) (sum / ((double) count * norm)) : 0.0f;
      if (column_age >= 0) out[column_age] = (float) ((double) (times[count - 1] - times[nearest]) / 86400.0);
    }
  }
  free(first);
  return 0;
}
