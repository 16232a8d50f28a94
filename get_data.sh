#!/usr/bin/env bash
# get_data.sh - download sample photos (COCO 2017 validation set) and the Mask R-CNN COCO weights.
#
#   ./get_data.sh                      all 5,000 val2017 photos + mask_rcnn_coco.h5
#   ./get_data.sh --limit 200          only the first 200 photos (by file name) + the weights
#   ./get_data.sh --only images --limit 50 --images-dir ~/photos
#   ./get_data.sh --only weights
#
# Needs internet access, curl and python3 (standard library only). The recommender itself works
# offline with its default detector; this script is for users who want real photos or Mask R-CNN.
#
# What is downloaded, and how it is verified
# * Photos: the official archive val2017.zip (815,585,330 bytes), verified with the SHA-256 in
#   DEFAULT_COCO_VAL_ZIP_SHA256 below. COCO publishes no checksums itself; this SHA-256 (and the
#   MD5 442b8da7639aecaf257c1dceb8ba8c80 of the same 815,585,330-byte file) are recorded
#   independently by several public projects (SHA-256: facebookresearch/ParlAI and others; MD5:
#   mlcommons/inference, intel/neural-compressor and others). The archive is removed after
#   extraction.
# * Weights: mask_rcnn_coco.h5 from the matterport/Mask_RCNN GitHub release v2.0, verified with
#   BOTH the SHA-256 in DEFAULT_MASKRCNN_WEIGHTS_SHA256 (recorded by guildai/packages,
#   matterport/mask-rcnn/guild.yml, which checks it on every fetch) and the MD5 in
#   DEFAULT_MASKRCNN_WEIGHTS_MD5 (printed in NVIDIA TensorRT's sampleUffMaskRCNN README and in
#   alibaba/ai-matrix's checksum list). matterport publishes no checksum: two independent sources
#   agree on the MD5, one gives the SHA-256, so both are required.
#
# How --limit gets file names without the 778 MB archive
#   A ZIP ends with a central directory listing every member's name, size, CRC-32 and offset.
#   With HTTP Range requests the script fetches only that directory (about 0.4 MB) from the
#   official val2017.zip, then fetches each chosen photo as its own byte range of the archive and
#   checks it against the archive's CRC-32 and size. Nothing is committed to this repository and
#   the names always match what the archive holds. Trade-offs: the server must honour Range
#   requests (the official archive is served from Amazon S3, which does; a server that does not
#   gets a clear message, and a full download still works), and a CRC-32 catches truncation and corruption but, unlike the full archive's
#   SHA-256, not deliberate tampering. The directory is cached in IMAGES_DIR/.get_data/, so later
#   runs check local files against it without any network access.
#
# Behaviour
#   * Resumable: big files go to NAME.part with `curl --continue-at -`; an interrupted run
#     continues where it stopped. A file is renamed into place only after it verified.
#   * Idempotent: files already present and verified are skipped; a second run downloads nothing.
#   * A file that fails verification is deleted and never installed; the run exits non-zero.
#
# Environment (all optional)
#   DATA_DIR                 base directory (default: data)
#   IMAGES_DIR               where the photos go (default: $DATA_DIR/images; --images-dir wins)
#   WEIGHTS_DIR              where the weights go (default: $DATA_DIR/weights; --weights-dir wins)
#   COCO_BASE_URL            COCO mirror; the archive is $COCO_BASE_URL/zips/val2017.zip
#                            (default: http://images.cocodataset.org)
#   COCO_VAL_ZIP_SHA256      expected SHA-256 of val2017.zip (for a mirror that repacked it)
#   MASKRCNN_WEIGHTS_URL     full URL of mask_rcnn_coco.h5
#   MASKRCNN_WEIGHTS_SHA256  expected SHA-256 of the weights
#   MASKRCNN_WEIGHTS_MD5     expected MD5 of the weights
#   GET_DATA_CONNECT_TIMEOUT seconds to wait for a connection (default: 20)
#   GET_DATA_RETRIES         retries of a failed request, e.g. a DNS hiccup (default: 3)
#
# Exit status: 0 done; 1 verification or other failure; 2 bad usage; 3 network unreachable or
# download interrupted (run again to resume); 4 a required tool is missing.

set -euo pipefail

readonly DEFAULT_COCO_BASE_URL="http://images.cocodataset.org"
readonly DEFAULT_COCO_VAL_ZIP_SHA256="4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05"
readonly DEFAULT_MASKRCNN_WEIGHTS_URL="https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"
readonly DEFAULT_MASKRCNN_WEIGHTS_SHA256="ab8f779d74d790abe4fcf3f60ab368129df5ee866262c439c6bae5af13afaf56"
readonly DEFAULT_MASKRCNN_WEIGHTS_MD5="e98aaff6f99e307b5e2a8a3ff741a518"

readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_NETWORK=3 EXIT_TOOL=4

usage() {
    cat <<'EOF'
Usage: get_data.sh [--limit N] [--images-dir DIR] [--weights-dir DIR] [--only images|weights]

Downloads COCO val2017 photos into the images directory (default data/images) and
mask_rcnn_coco.h5 into the weights directory (default data/weights), verifying each file.

  --limit N          only the first N photos by file name (1..5000), fetched individually
  --images-dir DIR   where photos go (overrides IMAGES_DIR)
  --weights-dir DIR  where weights go (overrides WEIGHTS_DIR)
  --only WHAT        "images" or "weights" (default: both)
  -h, --help         this help

Environment: DATA_DIR, IMAGES_DIR, WEIGHTS_DIR, COCO_BASE_URL, COCO_VAL_ZIP_SHA256,
MASKRCNN_WEIGHTS_URL, MASKRCNN_WEIGHTS_SHA256, MASKRCNN_WEIGHTS_MD5 (see the script's header).
Safe to re-run: verified files are skipped and interrupted downloads resume.
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'get_data.sh: %s\n' "$*" >&2; }
die() {
    local status=$1
    shift
    printf 'get_data.sh: error: %s\n' "$*" >&2
    exit "$status"
}

# --------------------------------------------------------------------------- arguments

LIMIT=""
ONLY="all"
DATA_DIR="${DATA_DIR:-data}"
IMAGES_DIR="${IMAGES_DIR:-$DATA_DIR/images}"
WEIGHTS_DIR="${WEIGHTS_DIR:-$DATA_DIR/weights}"

need_value() { [[ $# -ge 2 && -n $2 ]] || die $EXIT_USAGE "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --limit) need_value "$@"; LIMIT=$2; shift 2 ;;
        --limit=*) LIMIT=${1#*=}; shift ;;
        --images-dir) need_value "$@"; IMAGES_DIR=$2; shift 2 ;;
        --images-dir=*) IMAGES_DIR=${1#*=}; shift ;;
        --weights-dir) need_value "$@"; WEIGHTS_DIR=$2; shift 2 ;;
        --weights-dir=*) WEIGHTS_DIR=${1#*=}; shift ;;
        --only) need_value "$@"; ONLY=$2; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die $EXIT_USAGE "unknown argument '$1' (see --help)" ;;
    esac
done

case $ONLY in
    all | images | weights) ;;
    *) die $EXIT_USAGE "--only must be 'images' or 'weights', not '$ONLY'" ;;
esac
if [[ -n $LIMIT ]]; then
    [[ $LIMIT =~ ^[0-9]+$ ]] && ((10#$LIMIT >= 1)) || die $EXIT_USAGE "--limit must be a whole number of at least 1, not '$LIMIT'"
    LIMIT=$((10#$LIMIT))
    [[ $ONLY == weights ]] && die $EXIT_USAGE "--limit only applies to photos; it makes no sense with --only weights"
fi

COCO_BASE_URL="${COCO_BASE_URL:-$DEFAULT_COCO_BASE_URL}"
COCO_BASE_URL="${COCO_BASE_URL%/}"
COCO_ZIP_URL="$COCO_BASE_URL/zips/val2017.zip"
COCO_VAL_ZIP_SHA256="${COCO_VAL_ZIP_SHA256:-$DEFAULT_COCO_VAL_ZIP_SHA256}"
MASKRCNN_WEIGHTS_URL="${MASKRCNN_WEIGHTS_URL:-$DEFAULT_MASKRCNN_WEIGHTS_URL}"
MASKRCNN_WEIGHTS_SHA256="${MASKRCNN_WEIGHTS_SHA256:-$DEFAULT_MASKRCNN_WEIGHTS_SHA256}"
MASKRCNN_WEIGHTS_MD5="${MASKRCNN_WEIGHTS_MD5:-$DEFAULT_MASKRCNN_WEIGHTS_MD5}"
CONNECT_TIMEOUT="${GET_DATA_CONNECT_TIMEOUT:-20}"
RETRIES="${GET_DATA_RETRIES:-3}"
[[ $CONNECT_TIMEOUT =~ ^[0-9]+$ && $RETRIES =~ ^[0-9]+$ ]] ||
    die $EXIT_USAGE "GET_DATA_CONNECT_TIMEOUT and GET_DATA_RETRIES must be whole numbers"

for tool in curl python3 sha256sum md5sum; do
    command -v "$tool" >/dev/null 2>&1 || die $EXIT_TOOL "'$tool' is required but not installed (Debian/Ubuntu: sudo apt-get install curl python3 coreutils)"
done

TMP_DIR="$(mktemp -d -t get_data.XXXXXX)"
trap 'rm -rf "$TMP_DIR"' EXIT
HELPER="$TMP_DIR/zip_helper.py"

# --------------------------------------------------------------------------- zip helper
# ZIP parsing needs binary struct reading that bash cannot do; python3's standard library can.
cat >"$HELPER" <<'PY'
"""ZIP central-directory helper for get_data.sh (standard library only)."""
import os
import re
import struct
import sys
import zipfile
import zlib

MEMBER = re.compile(r"^val2017/([A-Za-z0-9_.-]+\.jpg)$")  # never trust names for paths: basename only


def fail(message):
    sys.stderr.write("get_data.sh: error: " + message + "\n")
    sys.exit(1)


def eocd(tail_path, total):
    """Offset, size and count of the central directory, from the archive's last bytes."""
    tail = open(tail_path, "rb").read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        fail("the archive's end record was not found: this is not a ZIP file (wrong COCO_BASE_URL?)")
    entries, size, offset = struct.unpack_from("<HII", tail, at + 10)
    if 0xFFFFFFFF in (size, offset) or entries == 0xFFFF:
        fail("this archive uses ZIP64, which --limit does not read; run without --limit")
    if offset + size > int(total):
        fail("the archive's directory points past its end: the file on the server is damaged")
    print(offset, size, entries)


def write_manifest(rows, path):
    rows.sort(key=lambda r: r[1])  # by offset: a member's bytes end where the next one begins
    with open(path + ".tmp", "w") as out:
        for i, (name, offset, csize, usize, crc, method, end) in enumerate(rows):
            if i + 1 < len(rows):
                end = rows[i + 1][1]
            out.write("%s\t%d\t%d\t%d\t%08x\t%d\t%d\n" % (name, offset, csize, usize, crc, method, end))
    os.replace(path + ".tmp", path)


def manifest_from_directory(cd_path, cd_offset, manifest):
    data = open(cd_path, "rb").read()
    rows, pos = [], 0
    while pos + 46 <= len(data) and data[pos:pos + 4] == b"PK\x01\x02":
        (flags, method, crc, csize, usize, nlen, xlen, clen, offset) = struct.unpack_from(
            "<8xHH4xIIIHHH8xI", data, pos)
        name = data[pos + 46:pos + 46 + nlen].decode("utf-8", "replace")
        pos += 46 + nlen + xlen + clen
        match = MEMBER.match(name)
        if match and not flags & 1 and method in (0, 8):  # skip encrypted or exotic members
            rows.append((match.group(1), offset, csize, usize, crc, method, int(cd_offset)))
    if not rows:
        fail("the archive lists no val2017/*.jpg photos (wrong COCO_BASE_URL?)")
    write_manifest(rows, manifest)


def manifest_from_zip(zip_path, manifest):
    with zipfile.ZipFile(zip_path) as archive:
        cd_offset = archive.start_dir
        rows = []
        for info in archive.infolist():
            match = MEMBER.match(info.filename)
            if match:
                rows.append((match.group(1), info.header_offset, info.compress_size, info.file_size,
                             info.CRC, info.compress_type, cd_offset))
    if not rows:
        fail("the archive holds no val2017/*.jpg photos")
    write_manifest(rows, manifest)


def read_manifest(manifest):
    rows = []
    for line in open(manifest):
        name, offset, csize, usize, crc, method, end = line.rstrip("\n").split("\t")
        rows.append((name, int(offset), int(csize), int(usize), int(crc, 16), int(method), int(end)))
    rows.sort()
    return rows


def file_ok(path, usize, crc):
    try:
        if os.path.getsize(path) != usize:
            return False
        value = 0
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                value = zlib.crc32(block, value)
        return value == crc
    except OSError:
        return False


def select(manifest, limit, images_dir, out_path):
    """Write the chosen members that are absent or damaged; print chosen and missing counts."""
    rows = read_manifest(manifest)
    chosen = rows if limit == "all" else rows[:int(limit)]
    missing = [r for r in chosen if not file_ok(os.path.join(images_dir, r[0]), r[3], r[4])]
    with open(out_path, "w") as out:
        for r in missing:
            out.write("%s\t%d\t%d\t%d\t%08x\t%d\t%d\n" % r)
    print(len(chosen), len(missing), len(rows))


def extract_member(span_path, name, csize, usize, crc, method, dest):
    """Check one member's bytes (local header + data) against the directory, write the photo."""
    csize, usize, crc, method = int(csize), int(usize), int(crc, 16), int(method)
    span = open(span_path, "rb").read()
    if len(span) < 30 or span[:4] != b"PK\x03\x04":
        fail("%s: the server did not return the photo's bytes of the archive" % name)
    nlen, xlen = struct.unpack_from("<HH", span, 26)
    start = 30 + nlen + xlen
    raw = span[start:start + csize]
    if len(raw) != csize:
        fail("%s: received %d of %d bytes" % (name, len(raw), csize))
    try:
        data = raw if method == 0 else zlib.decompress(raw, -15)
    except zlib.error:
        data = b""
    if len(data) != usize or zlib.crc32(data) != crc:
        sys.stderr.write("get_data.sh: %s failed verification (size or CRC-32 differs from the archive's "
                         "directory); it was not installed\n" % name)
        sys.exit(5)
    with open(dest, "wb") as out:
        out.write(data)


def extract_zip(zip_path, names_path, images_dir):
    """Extract the listed members; zipfile checks each CRC-32 as it reads."""
    wanted = [line.split("\t", 1)[0] for line in open(names_path) if line.strip()]
    with zipfile.ZipFile(zip_path) as archive:
        for count, name in enumerate(wanted, 1):
            final = os.path.join(images_dir, name)
            part = os.path.join(images_dir, "." + name + ".part")
            try:
                with archive.open("val2017/" + name) as src, open(part, "wb") as out:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        out.write(block)
            except (zipfile.BadZipFile, KeyError) as exc:
                if os.path.exists(part):
                    os.remove(part)
                fail("%s could not be extracted from the verified archive: %s" % (name, exc))
            os.replace(part, final)
            if count % 500 == 0 or count == len(wanted):
                print("  extracted %d/%d" % (count, len(wanted)), flush=True)


def main(argv):
    command, args = argv[1], argv[2:]
    {
        "eocd": eocd,
        "manifest-from-directory": manifest_from_directory,
        "manifest-from-zip": manifest_from_zip,
        "select": select,
        "extract-member": extract_member,
        "extract-zip": extract_zip,
    }[command](*args)


if __name__ == "__main__":
    main(sys.argv)
PY
zip_helper() { python3 "$HELPER" "$@"; }

# --------------------------------------------------------------------------- downloading

host_of() { local rest=${1#*://}; printf '%s' "${rest%%/*}"; }

# Explain a failed curl in words a user can act on, then exit.
curl_failed() {
    local status=$1 url=$2 http_code=$3 what=$4 hint=$5
    case $status in
        5 | 6 | 7 | 28 | 35 | 52 | 55 | 56 | 97)
            die $EXIT_NETWORK "cannot reach $(host_of "$url") to download $what (curl exit $status). \
Check your internet connection or proxy (curl honours https_proxy/http_proxy), then run this script again; \
finished files are kept and partial ones resume. $hint" ;;
        18)
            die $EXIT_NETWORK "the download of $what was interrupted (curl exit 18). Run this script again to resume it." ;;
        22)
            die $EXIT_FAILED "$(host_of "$url") answered HTTP $http_code for $url while downloading $what. $hint" ;;
        23)
            die $EXIT_FAILED "could not write $what to disk (curl exit 23): check free space and permissions." ;;
        63)
            die $EXIT_FAILED "$(host_of "$url") sent far more data than asked for $what; it ignores HTTP Range requests. $hint" ;;
        *)
            die $EXIT_FAILED "downloading $what from $url failed (curl exit $status). $hint" ;;
    esac
}

CURL_BASE=(curl --fail --location --show-error --connect-timeout "$CONNECT_TIMEOUT"
    --retry "$RETRIES" --retry-delay 2 --user-agent "recommender-get_data")

# fetch_resumable URL PART WHAT HINT: download into PART, continuing a previous partial download.
fetch_resumable() {
    local url=$1 part=$2 what=$3 hint=$4 status=0 http_code progress=(--silent)
    [[ -t 2 ]] && progress=(--progress-bar) # a bar for people at a terminal, quiet logs otherwise
    if [[ -s $part ]]; then
        say "  resuming $what from $(stat -c %s "$part") bytes already downloaded"
    fi
    http_code=$("${CURL_BASE[@]}" "${progress[@]}" --continue-at - --output "$part" \
        --write-out '%{http_code}' "$url") || status=$?
    if [[ $status -eq 33 || ($status -eq 22 && $http_code == 416) ]]; then
        # 33: the server cannot resume; 416: nothing left to fetch past our partial file (it may
        # be complete, or longer than the real file). Verification decides; a bad file restarts.
        return 10
    fi
    [[ $status -eq 0 ]] || curl_failed "$status" "$url" "$http_code" "$what" "$hint"
}

# fetch_range URL FIRST LAST OUT WHAT HINT: exactly bytes FIRST..LAST into OUT.
fetch_range() {
    local url=$1 first=$2 last=$3 out=$4 what=$5 hint=$6 status=0 http_code
    http_code=$("${CURL_BASE[@]}" --silent --range "$first-$last" --max-filesize $((last - first + 1 + 65536)) \
        --output "$out" --write-out '%{http_code}' "$url") || status=$?
    [[ $status -eq 63 ]] && return 11 # the whole file came back instead of the range
    [[ $status -eq 0 ]] || curl_failed "$status" "$url" "$http_code" "$what" "$hint"
    if [[ $http_code != 206 ]]; then
        return 11
    fi
    [[ $(stat -c %s "$out") -eq $((last - first + 1)) ]] ||
        die $EXIT_NETWORK "$what arrived incomplete; run this script again."
}

checksum_ok() { # FILE SHA256 [MD5]
    local file=$1 sha=$2 md5=${3:-}
    [[ $(sha256sum "$file" | cut -d' ' -f1) == "${sha,,}" ]] || return 1
    [[ -z $md5 || $(md5sum "$file" | cut -d' ' -f1) == "${md5,,}" ]]
}

# download_verified URL DEST WHAT SHA256 MD5 HINT: DEST appears only once it verified.
download_verified() {
    local url=$1 dest=$2 what=$3 sha=$4 md5=$5 hint=$6 part="$2.part" status
    for attempt in 1 2; do
        status=0
        fetch_resumable "$url" "$part" "$what" "$hint" || status=$?
        if [[ -s $part ]] && checksum_ok "$part" "$sha" "$md5"; then
            mv -f -- "$part" "$dest"
            return 0
        fi
        rm -f -- "$part"
        if [[ $status -eq 10 && $attempt -eq 1 ]]; then
            warn "the partial download of $what could not be completed; starting it again from zero"
            continue
        fi
        die $EXIT_FAILED "$what from $url does not match its expected checksum (SHA-256 $sha${md5:+, MD5 $md5}). \
The damaged download was deleted and nothing was installed. Run again; if it keeps failing, the server \
or a proxy alters the file. $hint"
    done
}

# --------------------------------------------------------------------------- weights

get_weights() {
    local dest="$WEIGHTS_DIR/mask_rcnn_coco.h5"
    local hint="Alternatively download it yourself from $MASKRCNN_WEIGHTS_URL into $WEIGHTS_DIR/ (or set MASKRCNN_WEIGHTS_URL to a mirror)."
    mkdir -p -- "$WEIGHTS_DIR"
    say "Mask R-CNN weights -> $dest"
    if [[ -e $dest ]]; then
        if checksum_ok "$dest" "$MASKRCNN_WEIGHTS_SHA256" "$MASKRCNN_WEIGHTS_MD5"; then
            say "  already present and verified; nothing to download"
            return 0
        fi
        die $EXIT_FAILED "$dest exists but is not the expected mask_rcnn_coco.h5 (checksum differs). \
It was left untouched: move or delete it, then run this script again."
    fi
    download_verified "$MASKRCNN_WEIGHTS_URL" "$dest" "mask_rcnn_coco.h5" \
        "$MASKRCNN_WEIGHTS_SHA256" "$MASKRCNN_WEIGHTS_MD5" "$hint"
    say "  downloaded and verified ($(stat -c %s "$dest") bytes)"
}

# --------------------------------------------------------------------------- photos

# Fetch the archive's central directory with two Range requests; 1 if the server cannot do ranges.
fetch_manifest_remote() {
    local manifest=$1 hint=$2 headers="$TMP_DIR/tail.headers" tail="$TMP_DIR/tail.bin" status=0 http_code
    local total cd_offset cd_size entries
    say "  reading the archive's table of contents from $COCO_ZIP_URL"
    # The end record is 22 bytes plus a comment of at most 65,535 bytes: the last 65,557 bytes hold it.
    http_code=$("${CURL_BASE[@]}" --silent --range "-65557" --max-filesize 1048576 --dump-header "$headers" \
        --output "$tail" --write-out '%{http_code}' "$COCO_ZIP_URL") || status=$?
    [[ $status -eq 63 ]] && return 1 # a whole-file answer to a range request: no range support
    [[ $status -eq 0 ]] || curl_failed "$status" "$COCO_ZIP_URL" "$http_code" "the val2017 table of contents" "$hint"
    [[ $http_code == 206 ]] || return 1
    total=$(tr -d '\r' <"$headers" | sed -n 's#^[Cc]ontent-[Rr]ange: *bytes [0-9]*-[0-9]*/\([0-9]*\)$#\1#p' | tail -n 1)
    [[ -n $total ]] || return 1
    local eocd
    eocd=$(zip_helper eocd "$tail" "$total") || exit $EXIT_FAILED
    read -r cd_offset cd_size entries <<<"$eocd"
    fetch_range "$COCO_ZIP_URL" "$cd_offset" $((cd_offset + cd_size - 1)) "$TMP_DIR/directory.bin" \
        "the val2017 table of contents" "$hint" || return 1
    zip_helper manifest-from-directory "$TMP_DIR/directory.bin" "$cd_offset" "$manifest"
    say "  the archive lists $(wc -l <"$manifest") photos ($entries entries)"
}

install_members_by_range() {
    local missing=$1 count=$2 hint=$3 done_count=0 failed=0
    local name offset csize usize crc method end span="$TMP_DIR/member.bin"
    while IFS=$'\t' read -r name offset csize usize crc method end; do
        fetch_range "$COCO_ZIP_URL" "$offset" $((end - 1)) "$span" "photo $name" "$hint" || return 11
        local part="$IMAGES_DIR/.$name.part"
        if zip_helper extract-member "$span" "$name" "$csize" "$usize" "$crc" "$method" "$part"; then
            # (errexit is off in functions whose status the caller tests: fail explicitly)
            mv -f -- "$part" "$IMAGES_DIR/$name" || die $EXIT_FAILED "cannot write $IMAGES_DIR/$name"
        else
            rm -f -- "$part"
            failed=$((failed + 1))
        fi
        done_count=$((done_count + 1))
        if ((done_count % 25 == 0 || done_count == count)); then
            say "  $done_count/$count photos fetched"
        fi
    done <"$missing"
    if ((failed > 0)); then
        die $EXIT_FAILED "$failed of $count photos failed verification and were not installed. Run this script again to retry them."
    fi
}

get_images() {
    local work="$IMAGES_DIR/.get_data" manifest missing chosen absent total hint counts
    manifest="$work/val2017-manifest.tsv"
    missing="$TMP_DIR/missing.tsv"
    hint="Or download $COCO_ZIP_URL yourself and unzip its val2017/*.jpg into $IMAGES_DIR (or set COCO_BASE_URL to a mirror)."
    mkdir -p -- "$work"
    say "COCO val2017 photos -> $IMAGES_DIR${LIMIT:+ (first $LIMIT by name)}"

    if [[ ! -s $manifest ]]; then
        if ! fetch_manifest_remote "$manifest" "$hint"; then
            [[ -n $LIMIT ]] && die $EXIT_FAILED "$(host_of "$COCO_ZIP_URL") does not honour HTTP Range requests, \
which --limit needs to fetch single photos. Run without --limit to download the whole archive (778 MB)."
            warn "the server does not support Range requests; downloading the whole archive"
        fi
    fi

    if [[ -s $manifest ]]; then
        counts=$(zip_helper select "$manifest" "${LIMIT:-all}" "$IMAGES_DIR" "$missing") || exit $EXIT_FAILED
        read -r chosen absent total <<<"$counts"
        if ((absent == 0)); then
            say "  all $chosen photos already present and verified; nothing to download"
            return 0
        fi
        say "  $absent of $chosen photos to download"
        # Single photos by Range for --limit, and for a full set missing only a few photos
        # (a quarter of 778 MB is about when one archive download becomes the cheaper way).
        if [[ -n $LIMIT ]] || ((absent * 4 < chosen)); then
            local status=0
            install_members_by_range "$missing" "$absent" "$hint" || status=$?
            if ((status == 0)); then
                say "  done: $chosen photos in $IMAGES_DIR"
                return 0
            fi
            [[ -n $LIMIT ]] && die $EXIT_FAILED "$(host_of "$COCO_ZIP_URL") does not honour HTTP Range requests, \
which --limit needs to fetch single photos. Run without --limit to download the whole archive (778 MB)."
            warn "the server does not support Range requests; downloading the whole archive"
        fi
    fi

    local zip="$work/val2017.zip"
    if [[ ! -e $zip ]]; then
        say "  downloading the whole archive $COCO_ZIP_URL (778 MB from the official host)"
        download_verified "$COCO_ZIP_URL" "$zip" "val2017.zip" "$COCO_VAL_ZIP_SHA256" "" "$hint"
    elif ! checksum_ok "$zip" "$COCO_VAL_ZIP_SHA256"; then
        rm -f -- "$zip"
        die $EXIT_FAILED "a previously downloaded $zip did not verify and was deleted; run again."
    fi
    zip_helper manifest-from-zip "$zip" "$manifest" || exit $EXIT_FAILED
    counts=$(zip_helper select "$manifest" all "$IMAGES_DIR" "$missing") || exit $EXIT_FAILED
    read -r chosen absent total <<<"$counts"
    say "  extracting $absent photos"
    zip_helper extract-zip "$zip" "$missing" "$IMAGES_DIR"
    rm -f -- "$zip"
    say "  done: $chosen photos in $IMAGES_DIR (archive removed)"
}

# --------------------------------------------------------------------------- main

[[ $ONLY == weights ]] || get_images
[[ $ONLY == images ]] || get_weights
say "All requested data is in place."
