-- The OGC API's national point layers (pub.equipements, pub.arrets_transport) were rebuilt by every region's
-- publication: 18 copies of 2.9 M BPE rows, sorted, indexed and analysed in a national run. Each build now records
-- which loads of its source it copied (the source's and its partitions' relations: every load swaps them in); a
-- publication with the same loads keeps the layer.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE IF NOT EXISTS meta.pub_layer_builds (
    layer text PRIMARY KEY,
    source_table text NOT NULL,
    source_loads text NOT NULL,
    built_at timestamptz NOT NULL DEFAULT now(),
    rows bigint
);
COMMENT ON TABLE meta.pub_layer_builds IS 'Dernière construction de chaque couche de points nationale du schéma pub (API OGC) : les chargements de sa source qu''elle reprend ; une publication sans nouveau chargement la garde telle quelle';
COMMENT ON COLUMN meta.pub_layer_builds.layer IS 'Couche du schéma pub (equipements, arrets_transport)';
COMMENT ON COLUMN meta.pub_layer_builds.source_table IS 'Table source (src.bpe, src.gtfs_stops)';
COMMENT ON COLUMN meta.pub_layer_builds.source_loads IS 'Empreinte des chargements repris : identifiants (oid:relfilenode) de la table source et de ses partitions, que chaque chargement remplace';
COMMENT ON COLUMN meta.pub_layer_builds.built_at IS 'Date de construction de la couche';
COMMENT ON COLUMN meta.pub_layer_builds.rows IS 'Nombre d''objets de la couche';
