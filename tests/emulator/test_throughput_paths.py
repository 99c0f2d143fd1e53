"""What makes the emulator fast must not change what it answers: HTTP/1.1 keep-alive, JSON-lines
seeds, seed documents stored as sent, the search index (docs/emulator.md, Throughput)."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from emulator_support import CT_STUDY, SAMPLE_METADATA, Api

from reconciler.emulator.server import OptionsError, ThreadedEmulator

REPO = Path(__file__).resolve().parents[2]


def _connection(emu: ThreadedEmulator) -> http.client.HTTPConnection:
    host, port = emu.url.split("//", 1)[1].rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def _exchange(conn, method, path, body=None, headers=None, chunked=False):
    conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
    response = conn.getresponse()
    data = response.read()
    return response, data


# ----------------------------------------------------------------------------- keep-alive
def test_one_connection_carries_many_requests_each_parsed_correctly(emulator):
    ds, image_set = emulator.datastore_id, emulator.image_set_ids[0]
    conn = _connection(emulator)
    response, data = _exchange(conn, "GET", f"/datastore/{ds}")
    sock = conn.sock
    assert response.status == 200 and response.getheader("Connection") is None
    assert json.loads(data)["datastoreProperties"]["datastoreId"] == ds
    assert int(response.getheader("Content-Length")) == len(data)

    # An error answer, then the gzip metadata blob: each framed by its Content-Length.
    response, data = _exchange(conn, "GET", "/datastore/" + "0" * 32)
    assert response.status == 404 and response.getheader("x-amzn-ErrorType") == \
        "ResourceNotFoundException"
    assert "does not exist" in json.loads(data)["message"]
    response, data = _exchange(conn, "POST",
                               f"/datastore/{ds}/imageSet/{image_set}/getImageSetMetadata")
    assert response.status == 200 and response.getheader("Content-Encoding") == "gzip"
    assert int(response.getheader("Content-Length")) == len(data)
    assert json.loads(gzip.decompress(data))["ImageSetID"] == image_set

    # A body the app never reads (admin health) must not be taken for the next request.
    response, data = _exchange(conn, "GET", "/_emulator/health", body=b"x" * 5000)
    assert response.status == 200 and json.loads(data) == {"status": "ok"}
    # A chunked request body is read to its end.
    criteria = json.dumps({"filters": [{                          # the payload member
        "values": [{"DICOMStudyInstanceUID": CT_STUDY}], "operator": "EQUAL"}]}).encode()
    response, data = _exchange(conn, "POST", f"/datastore/{ds}/searchImageSets",
                               body=iter([criteria[:10], criteria[10:]]),
                               headers={"Content-Type": "application/json",
                                        "Transfer-Encoding": "chunked"}, chunked=True)
    assert response.status == 200
    assert len(json.loads(data)["imageSetsMetadataSummaries"]) == 1
    # HEAD (no admin endpoint answers it): headers only, with the length of the body not
    # sent, and the connection is still in step afterwards.
    response, data = _exchange(conn, "HEAD", "/_emulator/health")
    assert response.status == 404 and data == b""
    assert int(response.getheader("Content-Length")) > 0
    response, data = _exchange(conn, "GET", "/_emulator/health")
    assert json.loads(data) == {"status": "ok"}
    assert conn.sock is sock                          # never reconnected
    conn.close()


def test_connection_close_and_http_1_0_are_honoured(emulator):
    conn = _connection(emulator)
    response, _ = _exchange(conn, "GET", "/_emulator/health", headers={"Connection": "close"})
    assert response.status == 200 and response.getheader("Connection") == "close"
    host, port = emulator.url.split("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"GET /_emulator/health HTTP/1.0\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):                # ends: the server closes
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"status": "ok"}


def test_stop_ends_kept_alive_connections():
    emu = ThreadedEmulator()
    emu.start()
    conn = _connection(emu)
    assert _exchange(conn, "GET", "/_emulator/health")[0].status == 200
    emu.stop()
    with pytest.raises((http.client.HTTPException, OSError)):
        _exchange(conn, "GET", "/_emulator/health")


def test_boto3_reuses_its_connection(emulator):
    api = Api(emulator)
    for image_set in emulator.image_set_ids * 3:
        api.get(image_set)
        api.meta(image_set)
    assert len(emulator._server.emulator_connections) == 1


# --------------------------------------------------------------------- JSON-lines seeds
def _variants(count: int) -> list[dict]:
    sample = json.loads(SAMPLE_METADATA.read_text())
    docs = []
    for n in range(count):
        doc = json.loads(json.dumps(sample))
        doc["Study"]["DICOM"]["StudyInstanceUID"] = f"1.2.3.{n}"
        doc["Patient"]["DICOM"]["PatientName"] = f"JSONL^É{n}"       # non-ASCII, kept as is
        doc["ImageSetID"] = f"{n:032x}" if n % 2 == 0 else None     # odd: derived ids
        docs.append(doc)
    return docs


def test_json_lines_seed_matches_one_file_per_document(tmp_path):
    docs = _variants(4)
    lines = tmp_path / "fleet.jsonl"
    # Compact lines (stored as they are, ids put in), one with spaces (serialised instead),
    # and a blank line.
    text = [json.dumps(d, separators=(",", ":"), ensure_ascii=False) for d in docs[:3]]
    lines.write_text("\n".join(text) + "\n\n" + json.dumps(docs[3]) + "\n", encoding="utf-8")
    folder = tmp_path / "files"
    folder.mkdir()
    for n, doc in enumerate(docs):
        (folder / f"{n}.json").write_text(json.dumps(doc, indent=2))
    with ThreadedEmulator(seeds=[str(lines)]) as fast, ThreadedEmulator(seeds=[str(folder)]) \
            as slow:
        assert fast.image_set_ids == slow.image_set_ids and len(fast.image_set_ids) == 4
        assert fast.image_set_ids[0] == docs[0]["ImageSetID"]
        a, b = Api(fast), Api(slow)
        for image_set in fast.image_set_ids:
            doc = a.meta(image_set)
            assert doc == b.meta(image_set)
            assert list(doc)[:3] == ["SchemaVersion", "DatastoreID", "ImageSetID"]
            assert (doc["SchemaVersion"], doc["DatastoreID"], doc["ImageSetID"]) == \
                ("1.1", fast.datastore_id, image_set)
        found = [c.search_image_sets(datastoreId=fast.datastore_id, searchCriteria={
            "filters": [{"values": [{"DICOMStudyInstanceUID": "1.2.3.2"}], "operator": "EQUAL"}]}
        )["imageSetsMetadataSummaries"] for c in (a.client, b.client)]
        assert len(found[0]) == 1
        assert found[0][0]["DICOMTags"] == found[1][0]["DICOMTags"]
        assert found[0][0]["DICOMTags"]["DICOMPatientName"] == "JSONL^É2"
        # A seeded document is updated like any other.
        final = a.apply(fast.image_set_ids[1], {"Study": {"DICOM": {"StudyDescription": "X"}}})
        assert final["imageSetWorkflowStatus"] == "UPDATED"
        assert a.meta(fast.image_set_ids[1], "2")["Study"]["DICOM"]["StudyDescription"] == "X"


def test_a_bad_json_line_names_its_line(tmp_path):
    seed = tmp_path / "fleet.ndjson"
    seed.write_text(json.dumps(_variants(1)[0]) + "\n{\"Study\": {}}\n")
    with pytest.raises(OptionsError, match=r"fleet\.ndjson:2: not a HealthImaging metadata"):
        ThreadedEmulator(seeds=[str(seed)])


def test_serve_seeds_from_json_lines(tmp_path):
    seed = tmp_path / "fleet.jsonl"
    docs = _variants(3)
    seed.write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs))
    expected = ThreadedEmulator(seeds=[str(seed)])
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "emulator", "serve", "--seed",
                             str(seed)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(5)]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert lines[0].startswith("Emulator listening on http://127.0.0.1:")
    assert lines[2:] == [f"image-set {i} datastore={expected.datastore_id}"
                         for i in expected.image_set_ids]
    assert "JSONL^" not in "\n".join(lines)                      # never a metadata value


# ------------------------------------------------------------------------ search index
def test_search_index_answers_only_what_the_shown_version_holds(make_api):
    api = make_api(behaviours={"primary_restricted_levels": "off"}, update_delay=0)
    ct = api.image_set(CT_STUDY)
    before = api.meta(ct)["Patient"]["DICOM"]["PatientID"]

    def found(patient_id):
        return [s["imageSetId"] for s in api.client.search_image_sets(
            datastoreId=api.ds, searchCriteria={"filters": [{
                "values": [{"DICOMPatientId": patient_id}], "operator": "EQUAL"}]}
        )["imageSetsMetadataSummaries"]]

    assert found(before) == [ct]
    api.apply(ct, {"Patient": {"DICOM": {"PatientID": "NEW-ID"}}}, force=True)
    assert api.latest(ct) == "2"
    assert found("NEW-ID") == [ct] and found(before) == []
    api.apply(ct, None, revert="1", latest="2")
    assert found("NEW-ID") == [] and found(before) == [ct]


def test_a_kept_listing_is_dropped_by_any_change(api, reading):
    """The whole-data-store listing is kept between pages while nothing changes; an update,
    in flight or finished, shows in the next search as it did before."""
    if reading.behaviour("search_index_lag") not in (0, 0.0, "0"):
        pytest.skip("with an index lag the listing is never kept")

    def listing():
        pages, token = [], None
        while True:
            kw = {"nextToken": token} if token else {}
            out = api.client.search_image_sets(datastoreId=api.ds, maxResults=2, **kw)
            pages += [(s["imageSetId"], s["version"])
                      for s in out["imageSetsMetadataSummaries"]]
            token = out.get("nextToken")
            if not token:
                return pages

    first = listing()
    assert listing() == first and len(first) > 2
    image_set, _ = first[-1]                  # the least recently updated
    api.apply(image_set, {"Study": {"DICOM": {"StudyDescription": "KEPT-LISTING"}}})
    after = listing()
    assert after[0] == (image_set, 2)         # newest first: the change shows at once
    assert sorted(after) == sorted([(i, v) for i, v in first if i != image_set]
                                   + [(image_set, 2)])
