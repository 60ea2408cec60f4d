-- pinpipe output `top_country` (contract §5) in Spark SQL 3.5: one statement over the views pin_table,
-- geo_table and user_table (the cleaned Delta tables). See sql/spark/README.md.
WITH p AS (
  SELECT ind, poster_name, follower_count, category FROM (
    SELECT *, row_number() OVER (PARTITION BY ind ORDER BY
        unique_id DESC NULLS LAST, title DESC NULLS LAST, description DESC NULLS LAST,
        follower_count DESC NULLS LAST, poster_name DESC NULLS LAST, tag_list DESC NULLS LAST,
        is_image_or_video DESC NULLS LAST, image_src DESC NULLS LAST, save_location DESC NULLS LAST,
        category DESC NULLS LAST) AS pick
    FROM pin_table) WHERE pick = 1),
g AS (
  SELECT ind, country, `timestamp` FROM (
    SELECT *, row_number() OVER (PARTITION BY ind ORDER BY
        country DESC NULLS LAST, coordinates DESC NULLS LAST, `timestamp` DESC NULLS LAST) AS pick
    FROM geo_table) WHERE pick = 1),
pg AS (
  SELECT p.category, p.poster_name, p.follower_count, g.country, CAST(year(g.`timestamp`) AS INT) AS post_year
  FROM p JOIN g ON p.ind = g.ind),
top AS (
  SELECT country, poster_name, follower_count FROM (
    SELECT country, poster_name, follower_count,
           row_number() OVER (PARTITION BY country ORDER BY follower_count DESC, poster_name ASC NULLS LAST) AS pick
    FROM pg WHERE country IS NOT NULL AND follower_count IS NOT NULL) WHERE pick = 1)
SELECT country, follower_count FROM top
ORDER BY follower_count DESC, country ASC
LIMIT 1
