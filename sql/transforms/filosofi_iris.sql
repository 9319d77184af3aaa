-- filosofi_iris: the commune of an IRIS is its code's first five characters (INSEE builds IRIS codes as the
-- commune's code followed by four digits). Run before the COG translation, which then moves the commune.
UPDATE {{staging}} SET insee_com = left(code_iris, 5);
