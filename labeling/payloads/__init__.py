"""What a write of the labeling app takes, declared once per payload (outside intake).

Each payload is one ``StrictSerializer`` (``feedback.api.inputs``: unknown fields, a non-string
for text and NUL characters are refused naming the field) and a function turning a request's
body into the typed value a service takes: the API view (whose schema the serializer is), the
admin form and the management command all call that function, so the schema cannot disagree
with what is accepted. The services check only what needs the database (a category of the
project's taxonomy, a queue of the project, a key taken).

- ``gold``: gold sets and gold items (``gold_set_input``, ``gold_item_input``, and the notes
  of a version, ``version_notes``).
- ``labels``: a reviewer's label (``label_input``).
- ``audits``: an audit request (``audit_request``).
- ``queues``: a queue's configuration (``queue_input``).
- Gold promotion's ``{"from_item", "key", "min_agreement"}`` is still declared in
  ``labeling.api.goldsets`` (``GoldPromoteSerializer``).
- Exports keep theirs in ``labeling.exports.request`` (``export_request``).
"""
