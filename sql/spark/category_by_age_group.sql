-- pinpipe output `category_by_age_group` (contract §5) in Spark SQL 3.5: one statement over the views pin_table,
-- geo_table and user_table (the cleaned Delta tables). See sql/spark/README.md.
WITH p AS (
  SELECT ind, poster_name, follower_count, category FROM (
    SELECT *, row_number() OVER (PARTITION BY ind ORDER BY
        unique_id DESC NULLS LAST, title DESC NULLS LAST, description DESC NULLS LAST,
        follower_count DESC NULLS LAST, poster_name DESC NULLS LAST, tag_list DESC NULLS LAST,
        is_image_or_video DESC NULLS LAST, image_src DESC NULLS LAST, save_location DESC NULLS LAST,
        category DESC NULLS LAST) AS pick
    FROM pin_table) WHERE pick = 1),
u AS (
  SELECT ind, user_name, age, date_joined FROM (
    SELECT *, row_number() OVER (PARTITION BY ind ORDER BY
        user_name DESC NULLS LAST, age DESC NULLS LAST, date_joined DESC NULLS LAST) AS pick
    FROM user_table) WHERE pick = 1),
pu AS (
  SELECT p.category, p.follower_count,
         CASE WHEN u.age BETWEEN 18 AND 24 THEN '18-24' WHEN u.age BETWEEN 25 AND 35 THEN '25-35'
              WHEN u.age BETWEEN 36 AND 50 THEN '36-50' WHEN u.age > 50 THEN '+50' END AS age_group,
         CAST(year(u.date_joined) AS INT) AS post_year
  FROM p JOIN u ON p.ind = u.ind),
counts AS (
  SELECT age_group, category, count(*) AS n FROM pu
  WHERE age_group IS NOT NULL AND category IS NOT NULL GROUP BY age_group, category)
SELECT age_group, category, category_count FROM (
  SELECT age_group, category, n AS category_count,
         row_number() OVER (PARTITION BY age_group ORDER BY n DESC, category ASC) AS pick
  FROM counts) WHERE pick = 1
ORDER BY CASE age_group WHEN '18-24' THEN 0 WHEN '25-35' THEN 1 WHEN '36-50' THEN 2 ELSE 3 END
