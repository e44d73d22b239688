"""S3 XML answers: escaping, control characters, timestamps (the listing's hot path)."""
import xml.etree.ElementTree as ET

from api_server.s3 import xml
from api_server.s3.buckets import iso_time


def test_values_are_escaped_and_control_characters_become_entities():
    body = xml.render("R", [("Key", 'a<b>&"\x01c\x1f\td\n'), ("Flag", True), ("N", 0),
                            ("Off", False), ("Gone", None)])
    text = body.decode()
    assert "<Key>a&lt;b&gt;&amp;\"&#x1;c&#x1f;\td\n</Key>" in text
    assert "<Flag>true</Flag><N>0</N><Off>false</Off>" in text
    assert "Gone" not in text


def test_plain_values_parse_back():
    body = xml.render("R", [("Key", 'a<b>&"c\td é')])
    assert ET.fromstring(body).find(f"{{{xml.NS}}}Key").text == 'a<b>&"c\td é'


def test_nested_values_render_in_order():
    body = xml.render("R", [("Contents", [("Key", "k"), ("Size", 5)]),
                            ("CommonPrefixes", [("Prefix", "p/")])])
    assert body.endswith(b"<Contents><Key>k</Key><Size>5</Size></Contents>"
                         b"<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes></R>")


def test_iso_time_is_utc_with_milliseconds():
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1700000000.1239) == "2023-11-14T22:13:20.123Z"
    assert iso_time(1700000000.9999) == "2023-11-14T22:13:20.999Z"
